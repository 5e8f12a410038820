/* tokenizer.h — byte-level BPE, encode and decode: GPT-2's (encoder.json + vocab.bpe; end-of-text is
 * id 50256, the vocabulary has 50257 entries) or a Hugging Face Qwen2 directory's (vocab.json +
 * merges.txt + tokenizer_config.json's special tokens; Qwen2's pre-tokenisation; end-of-text is
 * <|endoftext|>, 151643 in Qwen2). See tokenizer.c. */
#ifndef MF_TOKENIZER_H
#define MF_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

#define GPT2_EOT 50256

typedef struct Tokenizer Tokenizer;

/* Load from a directory holding encoder.json and vocab.bpe (GPT-2), or else vocab.json and merges.txt
 * (+ tokenizer_config.json). NULL + message (naming the file and the problem) in err on failure. */
Tokenizer *tok_load(const char *dir, char *err, size_t errlen);
void tok_free(Tokenizer *t);
int tok_vocab_size(const Tokenizer *t); /* BPE tokens and special tokens */
int tok_eot(const Tokenizer *t);        /* the end-of-text id, or -1 when the vocabulary has none */

/* Append the ids of text[0..len) to *ids (a growable array: *n used, *cap allocated; realloc'd).
 * Returns 0, or -1 on malformed UTF-8 (bytes are still encoded: byte-level BPE never fails). */
int tok_encode(Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap);

/* Decode ids into a malloc'd NUL-terminated string (*len bytes, may contain any bytes).
 * Ids outside the vocabulary return NULL. */
char *tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, size_t *len);
#endif
