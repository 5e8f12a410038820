/* tokenizer.h — GPT-2 byte-level BPE (encoder.json + vocab.bpe), encode and decode.
 * End-of-text is id 50256; the vocabulary has 50257 entries. */
#ifndef MF_TOKENIZER_H
#define MF_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

#define GPT2_EOT 50256

typedef struct Tokenizer Tokenizer;

/* Load from a directory holding encoder.json and vocab.bpe. NULL + message (naming the file and
 * the problem) in err on failure. */
Tokenizer *tok_load(const char *dir, char *err, size_t errlen);
void tok_free(Tokenizer *t);
int tok_vocab_size(const Tokenizer *t);

/* Append the ids of text[0..len) to *ids (a growable array: *n used, *cap allocated; realloc'd).
 * Returns 0, or -1 on malformed UTF-8 (bytes are still encoded: byte-level BPE never fails). */
int tok_encode(Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap);

/* Decode ids into a malloc'd NUL-terminated string (*len bytes, may contain any bytes).
 * Ids outside the vocabulary return NULL. */
char *tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, size_t *len);
#endif
