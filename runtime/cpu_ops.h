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

/* partials[g] = Σ grads[i]² over chunk g = [g·⌈n/G⌉, (g+1)·⌈n/G⌉) ∩ [0, n) */
void cpu_sumsq(const float *grads, float *partials, long n, long G);
/* scal = {lr, 1−β1^t, 1−β2^t}; see docs/ir.md "Optimizer". */
void cpu_adamw(float *master, const float *grads, float *m, float *v, const float *scal, const float *partials,
               long n, long n_decay, long G, float wd, float beta1, float beta2, float eps, float clip);
#endif
