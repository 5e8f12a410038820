/* textgen.h — text in, text out around the decode program (sample.h): encode a prompt with the
 * GPT-2 tokenizer, sample a continuation with the KV-cache decoder, decode it and print it. */
#ifndef MF_TEXTGEN_H
#define MF_TEXTGEN_H
#include "backend.h"
#include "tokenizer.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
  const char *prompt;  /* text to continue; "" starts a new document */
  int tokens;          /* new tokens at most (fewer at the end of the context) */
  float temperature;   /* 0 = greedy */
  int top_k;           /* 0 = no top-k filter */
  uint64_t seed;
} TextGenOpts;

/* The prompt is fed as [end-of-text, encode(prompt)...] — how every document starts in the
 * training shards. Sampling goes on across end-of-text tokens (they print as <|endoftext|>, the
 * start of a new document), to `tokens` tokens or the end of the context. Prints
 *   --- sample <title> | temperature T | top-k K | N tokens ---
 *   <prompt><continuation>
 *   ---
 * to out. Returns 0, or -1 with a message (no decode program in the plan, a prompt that does not
 * fit the context or uses ids beyond the model's vocabulary). */
int textgen_print(Backend *b, Tokenizer *tok, const TextGenOpts *o, const char *title, FILE *out, char *err, size_t errlen);
#endif
