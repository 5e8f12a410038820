/* textgen.c — see textgen.h. */
#include "textgen.h"
#include "sample.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

int textgen_print(Backend *b, Tokenizer *tok, const TextGenOpts *o, const char *title, FILE *out, char *err, size_t errlen) {
  const Plan *p = b->plan;
  if (!sample_supported(p)) {
    snprintf(err, errlen, "%s has no decode program (dec ops): a plan from an older gen; regenerate it to sample", p->path);
    return -1;
  }
  long V = plan_dim(p, "V"), T = plan_dim(p, "T");
  const char *text = o->prompt ? o->prompt : "";
  size_t n = 1, cap = 64;
  int32_t *ids = xmalloc(cap * sizeof *ids);
  ids[0] = tok_eot(tok) >= 0 ? tok_eot(tok) : 0; /* a new document; a vocabulary without end-of-text: id 0 */
  tok_encode(tok, text, strlen(text), &ids, &n, &cap); /* malformed UTF-8 is still encoded, byte by byte */
  for (size_t i = 0; i < n; i++)
    if (ids[i] >= V) {
      snprintf(err, errlen, "prompt token %d (position %zu) is outside the model's vocabulary (V=%ld)", ids[i], i, V);
      free(ids);
      return -1;
    }
  if ((long)n >= T) {
    snprintf(err, errlen, "the prompt is %zu tokens (with the leading end-of-text); the model's context is %ld", n, T);
    free(ids);
    return -1;
  }
  SampleOpts so = {.max_new = o->tokens, .temperature = o->temperature, .top_k = o->top_k, .seed = o->seed, .stop_at_eot = 0};
  int nout = 0;
  int32_t *gen = sample_generate(b, ids, (int)n, &so, &nout);
  int shown = nout;
  size_t len = 0;
  char *cont = tok_decode(tok, gen, (size_t)shown, &len);
  fprintf(out, "--- sample %s | temperature %g | top-k %d | %d tokens ---\n", title, (double)o->temperature, o->top_k, nout);
  fputs(text, out);
  if (cont) fwrite(cont, 1, len, out);
  else fprintf(out, "[ids beyond the tokenizer's %d entries: not decodable]", tok_vocab_size(tok));
  fputs("\n---\n", out);
  fflush(out);
  free(cont);
  free(gen);
  free(ids);
  return 0;
}
