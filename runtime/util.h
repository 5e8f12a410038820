/* util.h — small helpers shared by the runtime: fatal errors, checked allocation, whole-file
 * reads, bf16 <-> f32 conversion, a monotonic clock, and the token-index builder used by the
 * embedding backward (docs/ir.md, "tokidx"). */
#ifndef MF_UTIL_H
#define MF_UTIL_H
#include <stddef.h>
#include <stdint.h>

/* Print "runtime: <message>" to stderr and exit(1). */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void *xmalloc(size_t n);               /* exits on failure; n = 0 is allowed */
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);

/* Read a whole file into a malloc'd buffer (one extra NUL byte after the data, so text can be
 * parsed as a C string). Returns NULL and sets errno on failure. */
char *read_file(const char *path, size_t *len);
/* Same, but exits with "runtime: PATH: reason" on failure. */
char *read_file_or_die(const char *path, size_t *len);
int file_exists(const char *path);

/* bf16 is the top 16 bits of an IEEE f32; conversion rounds to nearest, ties to even.
 * NaN stays NaN (quiet), infinities stay infinite. */
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);

/* Seconds from an arbitrary origin, monotonic (CLOCK_MONOTONIC). */
double now_sec(void);

/* tokidx = [ U, start_0 .. start_U, pos_0 .. pos_{N-1} ], size 2N+2 (unused tail zeroed):
 * the positions sorted stably by token, U distinct tokens, group u = pos[start_u .. start_{u+1}-1]. */
void tokidx_build(const int32_t *tokens, long n, int32_t *out);
#endif
