/* hf_qwen2.h — Hugging Face Qwen2 (Qwen2ForCausalLM) weights in and out.
 *
 * A plan is a Qwen2 when its backbone parameters are exactly those of docs/ir_decoder.md for RMSNorm,
 * SwiGLU, RoPE half-split over the whole head, full causal attention, q/k/v bias and no other bias;
 * ParScale's own parameters (docs/ir_parscale.md: h.{l}.attn.prefix_k / prefix_v, h.{l}.cra.*,
 * parscale.*) may come on top. The mapping (Linear layout [out, in] on both sides):
 *
 *   model.embed_tokens.weight [V, D]                 → wte.weight rows 0..V−1 (rows V..Vp−1 zero)
 *   model.layers.{l}.input_layernorm.weight          → h.{l}.ln_1.weight
 *   model.layers.{l}.self_attn.{q,k,v}_proj.weight   → h.{l}.attn.c_attn.weight rows [q (H·d); k (Hkv·d); v (Hkv·d)]
 *   model.layers.{l}.self_attn.{q,k,v}_proj.bias     → h.{l}.attn.c_attn.bias, the same rows
 *   model.layers.{l}.self_attn.o_proj.weight         → h.{l}.attn.c_proj.weight
 *   model.layers.{l}.post_attention_layernorm.weight → h.{l}.ln_2.weight
 *   model.layers.{l}.mlp.{gate,up}_proj.weight       → h.{l}.mlp.c_fc.weight rows [gate (F); up (F)]
 *   model.layers.{l}.mlp.down_proj.weight            → h.{l}.mlp.c_proj.weight
 *   model.norm.weight                                → ln_f.weight
 *   lm_head.weight [V, D]                            → lm_head.weight rows 0..V−1 (absent when tied)
 */
#ifndef MF_HF_QWEN2_H
#define MF_HF_QWEN2_H
#include "plan.h"
#include <stddef.h>

/* The model_type of DIR/config.json into type: 1, or 0 when DIR has no config.json, -1 with a message. */
int hf_model_type(const char *dir, char *type, size_t tn, char *err, size_t errlen);

/* 1 when the plan's backbone is a Qwen2 (see above); *extra = the number of ParScale parameters on
 * top of it. 0 with the first difference in why. */
int qwen2_mappable(const Plan *p, int *extra, char *why, size_t wn);

/* Read a Hugging Face Qwen2 directory (config.json; model.safetensors, or the shards that
 * model.safetensors.index.json names; F32, BF16 or F16) into the backbone parameters of
 * master[param_elems]; the other parameters (ParScale's) keep what master holds. config.json must
 * describe the plan's shapes, every backbone tensor must be present with its shape, and every tensor
 * of the files must have a place (a tied lm_head.weight and rotary inv_freq buffers aside). The
 * files' dtype goes to dtype (F32, BF16 or F16: the first tensor's). Nothing is changed on failure. */
int qwen2_load(const char *dir, const Plan *p, float *master, char *dtype, size_t dn, char *err, size_t errlen);

/* Write OUTDIR/config.json + OUTDIR/model.safetensors (tensors in dtype F32, BF16 or F16, rounded to
 * nearest even) that transformers' Qwen2ForCausalLM.from_pretrained loads. Only for plans without
 * ParScale parameters (parscale.n = 1). Written into a temporary directory beside OUTDIR and renamed
 * into place; OUTDIR must not exist. src_dir (or NULL): the Hugging Face directory the weights came
 * from, whose max_position_embeddings and bos/eos/pad token ids are carried over (else
 * max_position_embeddings is the plan's T). */
int qwen2_export(const char *outdir, const Plan *p, const float *master, const char *dtype, const char *src_dir, char *err,
                 size_t errlen);
#endif
