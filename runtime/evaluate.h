/* evaluate.h — validation: a fixed validation set, the model's mean loss on it (forward ops only),
 * and the unigram baseline a model must beat. */
#ifndef MF_EVALUATE_H
#define MF_EVALUATE_H
#include "backend.h"
#include <stddef.h>
#include <stdint.h>

/* The validation shards are read with this loader seed, so every run (whatever its own seed) is
 * measured on the same windows. */
#define EVAL_SEED 20240520u

/* The first `n` batches of the validation loader (B·T tokens and targets each): the same set at
 * every evaluation. Fewer than asked when the data holds fewer windows (never repeats one). */
typedef struct {
  int n;
  long BT;
  int32_t *tok, *tgt; /* n × BT each */
} EvalSet;

/* Read up to `batches` batches of [B, T] from the shards matching glob (ids checked < vocab).
 * Returns 0, or -1 with a message (no files, bad shard, too little data for one batch). */
int evalset_load(EvalSet *e, const char *glob, int B, int T, int vocab, int batches, char *err, size_t errlen);
void evalset_free(EvalSet *e);

/* Mean next-token loss over the set: each batch goes through micro-step 0's forward ops (loss
 * zeroed first), and the plan's loss_sum scale is undone to get the batch mean. Leaves the
 * parameters and optimizer state alone (gradients are zeroed and must not be read afterwards). */
double eval_loss(Backend *b, const EvalSet *e);

/* One batch (micro-step 0) through the forward ops: the logits over the real vocabulary, read
 * just before the cross-entropy op (which may overwrite them with their gradient), into
 * logits[N × V], and the batch's mean loss. */
double forward_logits(Backend *b, const int32_t *tok, const int32_t *tgt, float *logits);

/* Cross-entropy (nats/token) of the validation tokens under the unigram distribution of the
 * training tokens, add-one smoothed over max(vocab, largest id + 1) ids — the loss of a model that
 * ignores context. Reads every token of both globs. Returns 0, or -1 with a message. */
int unigram_baseline(const char *train_glob, const char *val_glob, int vocab, double *xent, size_t *ntrain, size_t *nval,
                     char *err, size_t errlen);
#endif
