/* checkpoint.h — checkpoints of a training run, and Hugging Face GPT-2 weights in and out.
 *
 * A checkpoint is the directory RUN/ckpt/step_NNNNNN (NNNNNN = optimizer steps completed) holding
 *   model.safetensors  the weights under the Hugging Face GPT-2 names and layout, f32, so that
 *                      transformers' GPT2LMHeadModel.from_pretrained(that directory) loads it:
 *                      transformer.wte.weight [V, D] (the padded rows dropped), transformer.wpe.weight,
 *                      transformer.h.{l}.{ln_1,ln_2}.{weight,bias}, transformer.h.{l}.attn.{c_attn,c_proj}.*,
 *                      transformer.h.{l}.mlp.{c_fc,c_proj}.*, transformer.ln_f.*; the four Linear weights
 *                      as Conv1D [in, out] (the transpose of our [out, in]); no lm_head (tied)
 *   config.json        the matching Hugging Face config (model_type gpt2, GPT2LMHeadModel)
 *   state.safetensors  the resume state: master.<name>, adam_m.<name>, adam_v.<name> for every
 *                      parameter (f32, internal layout), and in the metadata the step, the schedule
 *                      length, the seed, the data position (loader state or synthetic stream), the
 *                      plan's name and source hash, and a hash of the data section (corruption check)
 * (model.safetensors and config.json only for plans that are GPT-2: hf_mappable.)
 * It is written into RUN/ckpt/.tmp-step_NNNNNN.<pid> (each file fsync'd), renamed into place, and
 * then RUN/ckpt/latest ("step_NNNNNN") is replaced atomically. A run killed during a save leaves
 * only a .tmp-* directory: resuming ignores it (the next save removes it). */
#ifndef MF_CHECKPOINT_H
#define MF_CHECKPOINT_H
#include "backend.h"
#include "shards.h"
#include <stddef.h>
#include <stdint.h>

/* Everything besides the weights and moments that a run needs to continue exactly. */
typedef struct {
  long step;              /* optimizer steps completed */
  long total_steps;       /* the schedule length the lr was computed for */
  uint64_t seed;          /* the run's init/data seed */
  int synthetic;          /* 1: synthetic stream (synth_*); 0: token shards (loader) */
  uint64_t synth_counter; /* DataGen.counter and .cur */
  long synth_cur;
  LoaderState loader;
} TrainState;

/* Write RUN/ckpt/step_NNNNNN for s->step from the backend's master weights and moments. The
 * directory written goes to dir_out. Returns 0, or -1 with a message. */
int ckpt_save(const char *run_dir, Backend *b, const TrainState *s, char *dir_out, size_t dn, char *err, size_t errlen);

/* The newest complete checkpoint of RUN (step_* directories holding state.safetensors; .tmp-*
 * ignored): 1 and its directory in dir, 0 when there is none, -1 with a message on error. */
int ckpt_find_latest(const char *run_dir, char *dir, size_t dn, char *err, size_t errlen);

/* Read CKPT/state.safetensors: check the format, the data hash and that its parameter table equals
 * the plan's (a different spec is refused, naming the first mismatching tensor); then set the
 * backend's master weights and moments and fill *s. Nothing is changed on failure. */
int ckpt_load(const char *ckpt_dir, Backend *b, TrainState *s, char *err, size_t errlen);
/* The same checks, but only the master weights, into master[param_elems] (for sampling). */
int ckpt_load_weights(const char *ckpt_dir, const Plan *p, float *master, char *err, size_t errlen);

/* 1 when the plan is a GPT-2 that GPT2LMHeadModel computes: forward ops only of GPT-2's kinds
 * (plain causal attention, GELU, LayerNorm, learned positions, tied head) and exactly GPT-2's
 * parameters; else 0 with the first difference in why. Checkpoints of other plans hold only
 * state.safetensors. */
int hf_mappable(const Plan *p, char *why, size_t wn);
/* Write DIR/model.safetensors and DIR/config.json (Hugging Face GPT-2) from master[param_elems]. */
int hf_save(const char *dir, const Plan *p, const float *master, char *err, size_t errlen);
/* Read DIR/model.safetensors (Hugging Face GPT-2 names, with or without the "transformer."
 * prefix; F32, BF16 or F16) into master[param_elems]: the inverse mapping, wte padded with zero
 * rows up to Vp, wpe cut to the plan's T when the checkpoint has more positions. Every plan
 * parameter must be present with the matching shape and every tensor of the file must have a
 * place (the attention-mask buffers and a tied lm_head.weight aside). */
int hf_load(const char *dir, const Plan *p, float *master, char *err, size_t errlen);
#endif
