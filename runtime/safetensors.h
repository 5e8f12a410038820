/* safetensors.h — read and write the safetensors format: 8-byte little-endian header length N,
 * N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}},
 * then the raw little-endian tensor data (offsets relative to the end of the header). */
#ifndef MF_SAFETENSORS_H
#define MF_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef struct {
  char *name;
  char dtype[8];               /* F32 BF16 F16 F64 I64 I32 I16 I8 U8 BOOL ... */
  int ndim;
  long shape[ST_MAX_DIMS];
  long numel;
  size_t begin, end;           /* byte range within the data section */
} StTensor;

typedef struct {
  char path[1024];
  unsigned char *buf;          /* the whole file */
  size_t size, data_off;       /* data section starts at buf + data_off */
  int n; StTensor *t;
  int nmeta; char **meta_key, **meta_val;
} StFile;

/* Open and fully validate a file. On error returns -1 with "PATH: what is wrong" in err. */
int st_open(const char *path, StFile *f, char *err, size_t errlen);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
const char *st_meta(const StFile *f, const char *key);     /* NULL if absent */
size_t st_dtype_size(const char *dtype);                    /* 0 if unknown */

/* Copy tensor `name` into out, converted to f32 / int32.
 *   ndim >= 0: the tensor's shape must equal shape[0 .. ndim)
 *   ndim <  0: only its element count is checked, against shape[0]
 * Returns -1 with "PATH: tensor NAME: what is wrong" in err (missing, wrong shape, bad dtype). */
int st_read_f32(const StFile *f, const char *name, int ndim, const long *shape, float *out, char *err, size_t errlen);
int st_read_i32(const StFile *f, const char *name, int ndim, const long *shape, int32_t *out, char *err, size_t errlen);

/* Writer: tensors (data borrowed until st_write) and metadata; written atomically. */
typedef struct {
  int n, cap;
  struct StW { char *name; char dtype[8]; int ndim; long shape[ST_MAX_DIMS]; const void *data; size_t bytes; } *t;
  int nmeta, capmeta;
  char **meta_key, **meta_val;
} StWriter;

void st_writer_init(StWriter *w);
/* dtype one of the names above; data holds numel·size bytes of that dtype. */
void st_add(StWriter *w, const char *name, const char *dtype, int ndim, const long *shape, const void *data);
void st_add_meta(StWriter *w, const char *key, const char *value);
/* Write PATH.tmp.<pid>, fsync, rename to PATH. Returns -1 with a message in err on failure. */
int st_write(const StWriter *w, const char *path, char *err, size_t errlen);
void st_writer_free(StWriter *w);
#endif
