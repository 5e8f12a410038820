/* cpu_ops.h — the fp32 reference implementation of every op kind in docs/ir.md, on raw host
 * pointers. These functions ARE the definition of the ops: the GPU kernels are checked against
 * them (runtime --check). Shapes are passed explicitly; reductions accumulate in double. */
#ifndef MF_CPU_OPS_H
#define MF_CPU_OPS_H
#include <stdint.h>

float gelu_f(float x);        /* 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) */
float gelu_grad_f(float x);   /* d gelu / dx */

/* C[M,N] = op(A)·op(B) + beta·C, then epilogue epi (0 none, 1 bias, 2 gelu_bias, 3 dgelu). */
void cpu_matmul(int M, int N, int K, int ta, int tb, float beta, int epi, const float *A, const float *B,
                float *C, const float *bias, float *aux);
void cpu_embed(const int32_t *tok, const float *wte, const float *wpe, float *out, long N, long T, long D);
void cpu_layernorm(const float *x, const float *w, const float *b, float *out, float *mean, float *rstd,
                   long N, long C, float eps);
void cpu_add_layernorm(const float *a, const float *b, const float *w, const float *bias, float *sum,
                       float *out, float *mean, float *rstd, long N, long C, float eps);
void cpu_add(const float *a, const float *b, float *out, long n);
void cpu_gelu(const float *x, float *out, long n);
void cpu_attention(const float *qkv, float *out, float *lse, long B, long T, long H, long d);
void cpu_xent(float *logits, const int32_t *targets, float *losses, long N, long V, long Vp, float scale,
              int grad);
void cpu_loss_sum(const float *losses, float *loss, long N, float scale);

void cpu_gelu_bwd(const float *x, const float *dout, float *dx, long n, int acc);
void cpu_layernorm_bwd(const float *dout, const float *x, const float *w, const float *mean, const float *rstd,
                       float *dx, long N, long C, int acc);
void cpu_layernorm_bwd_params(const float *dout, const float *x, const float *mean, const float *rstd,
                              float *dw, float *db, long N, long C);
void cpu_bias_grad(const float *dout, float *db, long N, long C);
void cpu_attention_bwd_pre(const float *out, const float *dout, float *delta, long B, long T, long H, long d);
void cpu_attention_bwd_dkdv(const float *qkv, const float *dout, const float *lse, const float *delta,
                            float *dqkv, long B, long T, long H, long d);
void cpu_attention_bwd_dq(const float *qkv, const float *dout, const float *lse, const float *delta,
                          float *dqkv, long B, long T, long H, long d);
void cpu_embed_bwd_tok(const int32_t *tok, const float *dout, float *dwte, long N, long D);
void cpu_embed_bwd_pos(const float *dout, float *dwpe, long N, long T, long D);
void cpu_xent_bwd(const float *logits, const int32_t *targets, float *dlogits, long N, long V, long Vp,
                  float scale);

/* Decode program (one token per sequence at position pos). */
/* out[b] = wte[tok[b]] + wpe[pos] */
void cpu_embed_pos(const int32_t *tok, int pos, const float *wte, const float *wpe, float *out, long N, long D);
/* Append k, v of qkv [B, 3D] to the caches [B, T, D] at row pos, then causal attention of q over
 * cache rows 0..pos: out_h = Σ_j softmax_j(q_h·k_{j,h}/√d)·v_{j,h}. */
void cpu_attention_decode(const float *qkv, int pos, float *kcache, float *vcache, float *out, long B, long T,
                          long H, long d);

/* The optimizer over the arena range [lo, hi) (docs/ir.md "optrange"; {0, n} for the whole arena).
 * partials[g] = Σ grads[i]² over chunk g = [lo + g·C, lo + (g+1)·C) ∩ [lo, hi), C = ⌈(hi−lo)/G⌉ */
void cpu_sumsq(const float *grads, float *partials, long lo, long hi, long G);
/* scal = {lr, 1−β1^t, 1−β2^t}; see docs/ir.md "Optimizer". Updates elements lo ≤ i < hi only;
 * every array is indexed by the global arena index i. */
void cpu_adamw(float *master, const float *grads, float *m, float *v, const float *scal, const float *partials,
               long lo, long hi, long n_decay, long G, float wd, float beta1, float beta2, float eps, float clip);
/* ---- the model vocabulary of docs/ir_decoder.md ---- */

/* Norms. rstd = 1/√(Σx²/C + eps), out = x·rstd·w */
void cpu_rmsnorm(const float *x, const float *w, float *out, float *rstd, long N, long C, float eps);
void cpu_add_rmsnorm(const float *a, const float *b, const float *w, float *sum, float *out, float *rstd, long N,
                     long C, float eps);
/* g = dout·w, x̂ = x·rstd: dx (+)= rstd·(g − x̂·mean_c(g·x̂)) */
void cpu_rmsnorm_bwd(const float *dout, const float *x, const float *w, const float *rstd, float *dx, long N, long C,
                     int acc);
void cpu_rmsnorm_bwd_params(const float *dout, const float *x, const float *rstd, float *dw, long N, long C);
/* DyT: out = w·tanh(α·x) + b (alpha points at the one-element α) */
void cpu_dyt(const float *x, const float *alpha, const float *w, const float *b, float *out, long N, long C);
void cpu_add_dyt(const float *a, const float *b, const float *alpha, const float *w, const float *bias, float *sum,
                 float *out, long N, long C);
void cpu_dyt_bwd(const float *dout, const float *x, const float *alpha, const float *w, float *dx, long N, long C,
                 int acc);
void cpu_dyt_bwd_params(const float *dout, const float *x, const float *alpha, float *dalpha, const float *w,
                        float *dw, float *db, long N, long C);

/* Activations. act 0 = gelu (tanh form), 1 = silu for glu. */
void cpu_relu(const float *x, float *out, long n);
void cpu_relu_bwd(const float *x, const float *dout, float *dx, long n, int acc);
void cpu_silu(const float *x, float *out, long n);
void cpu_silu_bwd(const float *x, const float *dout, float *dx, long n, int acc);
void cpu_glu(const float *x, float *out, long N, long F, int act);
void cpu_glu_bwd(const float *x, const float *dout, float *dx, long N, long F, int act);

/* Dropout (docs/ir_decoder.md "Dropout"): the counter-based hash and the keep decision. */
uint64_t mf_drop_hash(uint64_t seed, uint64_t stream, uint64_t ctr, uint64_t i);
float mf_drop_uniform(uint64_t seed, uint64_t stream, uint64_t ctr, uint64_t i); /* (hash >> 40)·2^−24 */
/* ctr = {seed, step·accum + micro} (the dropctr input of the micro-step) */
void cpu_dropout(const float *x, const int32_t *ctr, float *out, long n, float p, long stream);
void cpu_dropout_bwd(const float *dout, const int32_t *ctr, float *dx, long n, float p, long stream, int acc);

/* out[i] = wte[tok[i]] */
void cpu_embed_tok(const int32_t *tok, const float *wte, float *out, long N, long D);
/* MLA: k[n, h] = [knope[n, h] ; R_t·krope[n]] (t = n mod T; rope 0: no rotation, 1 half-split, 2 adjacent);
 * backward dknope = slices, dkrope[n] = R_tᵀ Σ_h dk[n, h, dn:] */
void cpu_mla_k(const float *knope, const float *krope, float *k, long N, long H, long dn, long dr, int rope, long T,
               float base);
void cpu_mla_k_bwd(const float *dk, float *dknope, float *dkrope, long N, long H, long dn, long dr, int rope, long T,
                   float base);

/* Generalised attention `attn` (docs/ir.md, templates/attention_gen.cuh): layouts, GQA, window +
 * sinks, ALiBi, RoPE and attention-probability dropout. q/k/v rows are strided (LD*, *OFF, *HS);
 * out/dout [B·T, H·DV]; lse/delta [B, H, T]. dq/dk/dv have the layouts of q/k/v and only their own
 * columns are written. */
typedef struct {
  long B, T, H, HKV, DQK, DV, LDQ, LDK, LDV, QOFF, KOFF, VOFF, QHS, KHS, VHS, WINDOW, SINK, ALIBI, ROPE, ROPE_DIM;
  long KROT;                        /* 1: k arrives rotated (k̃); only q is rotated, dk is the gradient of k̃ */
  float scale, rope_base, dropout;  /* dropout: the probability of dropping p_ij (0: none) */
  long stream;                      /* dropout stream id */
  const int32_t *ctr;               /* dropctr {seed, counter} of the micro-step; unused when dropout = 0 */
  /* ParScale prefixes (docs/ir_parscale.md): NPRE entries per replica, NREP replicas (batch row b is
   * replica b / (B/NREP)); pk [NREP, HKV, NPRE, DQK], pv [NREP, HKV, NPRE, DV]; NPRE = 0: none */
  long NPRE, NREP;
  const float *pk, *pv;
} CpuAttn;
double attn_alibi_slope(long h, long H);   /* m_h of the ALiBi paper (interpolated when H is no power of 2) */
/* Rotate the last R dims of x[0..DQK) for position t (mode 1 half-split, 2 adjacent); inverse = 1 applies Rᵀ. */
void attn_rope(double *x, long DQK, long R, int mode, float base, long t, int inverse);
/* With RoPE, qr and kr (NULL: not written) receive q̃ = R·q and k̃ = R·k in the layouts of q and k (only
 * the heads' columns); the backward below then takes them as its q and k and un-rotates dq, dk. With KROT
 * the k given is already k̃: it is not rotated, kr is not written (pass NULL), the backward takes k itself
 * and leaves dk un-rotated. */
void cpu_attn(const CpuAttn *a, const float *q, const float *k, const float *v, float *out, float *lse, float *qr,
              float *kr);
/* One decode step (docs/ir.md "Decode", kind attn_decode): a->B sequences, one token each at
 * position pos (q, k, v: one row per sequence, in the attn layout); appends k̃ = R_pos·k and v at
 * row pos of kcache [B, T, HKV, DQK] / vcache [B, T, HKV, DV], then out [B, H·DV] = the attention
 * of q̃ = R_pos·q over the visible cache rows. Dropout is ignored. */
void cpu_attn_decode(const CpuAttn *a, const float *q, const float *k, const float *v, int pos, float *kcache,
                     float *vcache, float *out);
void cpu_attn_bwd_pre(const float *out, const float *dout, float *delta, long B, long T, long H, long DV);
/* dpk, dpv [B, HKV, NPRE, DQK|DV]: the per-row prefix gradient partials (written; NULL when NPRE = 0) */
void cpu_attn_bwd_dkdv(const CpuAttn *a, const float *q, const float *k, const float *v, const float *dout,
                       const float *lse, const float *delta, float *dk, float *dv, float *dpk, float *dpv);
void cpu_attn_bwd_dq(const CpuAttn *a, const float *q, const float *k, const float *v, const float *dout,
                     const float *lse, const float *delta, float *dq);

/* ---- ParScale (docs/ir_parscale.md); N = Bm·T rows per replica, rows replica-major (p·N + i) ---- */
/* out[p·N + i] = x[i];  backward dx[i] (+)= Σ_p dout[p·N + i] */
void cpu_ps_replicate(const float *x, float *out, long N, long C, long P);
void cpu_ps_replicate_bwd(const float *dout, float *dx, long N, long C, long P, int acc);
/* out[i, c·P + p] = x[p·N + i, c];  backward dx[p·N + i, c] (+)= dout[i, c·P + p] */
void cpu_interleave(const float *x, float *out, long N, long D, long P);
void cpu_interleave_bwd(const float *dout, float *dx, long N, long D, long P, int acc);
/* grad[p, r] += Σ_{b<Bm} partial[p·Bm + b, r] */
void cpu_prefix_grad_reduce(const float *partial, float *grad, long NREP, long Bm, long ROW);
/* cross-replica attention over qkv [P·N, 3·H·d]: out [P·N, H·d], lse [P·N, H]; backward writes dqkv */
void cpu_cra(const float *qkv, float *out, float *lse, long N, long P, long H, long d, float scale);
void cpu_cra_bwd(const float *qkv, const float *dout, const float *lse, float *dqkv, long N, long P, long H, long d,
                 float scale);
/* w = (1−eps)·softmax(a + b2) + eps/P, y[i] = Σ_p w[i,p]·h[p·N + i]; backward dh (+)=, da written,
 * db2 += Σ_i da[i] */
void cpu_ps_aggregate(const float *h, const float *a, const float *b2, float *y, float *w, long N, long D, long P,
                      float eps);
void cpu_ps_aggregate_bwd(const float *dy, const float *h, const float *w, float *dh, float *da, float *db2, long N,
                          long D, long P, float eps, int acc);
#endif
