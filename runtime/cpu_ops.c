/* cpu_ops.c — fp32 reference math for every op kind (docs/ir.md). Straightforward loops; sums
 * that decide accuracy (norm statistics, softmax, dot products of attention) run in double so
 * that this backend is a trustworthy oracle. Matmuls use OpenBLAS sgemm. */
#include "cpu_ops.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GELU_C 0.7978845608028654 /* √(2/π) */

float gelu_f(float x) {
  double u = GELU_C * (x + 0.044715 * (double)x * x * x);
  return (float)(0.5 * x * (1.0 + tanh(u)));
}

/* d/dx of 0.5·x·(1 + tanh u), u = c·(x + a·x³):
 * 0.5·(1 + tanh u) + 0.5·x·(1 − tanh² u)·c·(1 + 3a·x²) */
float gelu_grad_f(float x) {
  double xd = x, u = GELU_C * (xd + 0.044715 * xd * xd * xd), th = tanh(u);
  return (float)(0.5 * (1.0 + th) + 0.5 * xd * (1.0 - th * th) * GELU_C * (1.0 + 3.0 * 0.044715 * xd * xd));
}

void cpu_matmul(int M, int N, int K, int ta, int tb, float beta, int epi, const float *A, const float *B,
                float *C, const float *bias, float *aux) {
  /* op(A) is [M,K]: A is stored [M,K] (lda K) or, transposed, [K,M] (lda M); likewise B. */
  if (K > 0)
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                A, ta ? M : K, B, tb ? K : N, beta, C, N);
  else
    for (long i = 0; i < (long)M * N; i++) C[i] = beta == 0.0f ? 0.0f : beta * C[i];
  long MN = (long)M * N;
  switch (epi) {
  case 1: /* C += bias[n] */
    for (long i = 0; i < MN; i++) C[i] += bias[i % N];
    break;
  case 2: /* aux = Y + bias; C = gelu(aux) */
    for (long i = 0; i < MN; i++) { aux[i] = C[i] + bias[i % N]; C[i] = gelu_f(aux[i]); }
    break;
  case 3: /* C = Y ⊙ gelu'(aux) */
    for (long i = 0; i < MN; i++) C[i] *= gelu_grad_f(aux[i]);
    break;
  default:
    break;
  }
}

void cpu_embed(const int32_t *tok, const float *wte, const float *wpe, float *out, long N, long T, long D) {
  for (long i = 0; i < N; i++) {
    const float *e = wte + (long)tok[i] * D, *p = wpe + (i % T) * D;
    for (long c = 0; c < D; c++) out[i * D + c] = e[c] + p[c];
  }
}

void cpu_layernorm(const float *x, const float *w, const float *b, float *out, float *mean, float *rstd,
                   long N, long C, float eps) {
  for (long n = 0; n < N; n++) {
    const float *xr = x + n * C;
    double mu = 0, var = 0;
    for (long c = 0; c < C; c++) mu += xr[c];
    mu /= (double)C;
    for (long c = 0; c < C; c++) var += ((double)xr[c] - mu) * ((double)xr[c] - mu);
    var /= (double)C;
    double rs = 1.0 / sqrt(var + (double)eps);
    for (long c = 0; c < C; c++) out[n * C + c] = (float)(((double)xr[c] - mu) * rs * w[c] + b[c]);
    mean[n] = (float)mu;
    rstd[n] = (float)rs;
  }
}

void cpu_add_layernorm(const float *a, const float *b, const float *w, const float *bias, float *sum,
                       float *out, float *mean, float *rstd, long N, long C, float eps) {
  cpu_add(a, b, sum, N * C);
  cpu_layernorm(sum, w, bias, out, mean, rstd, N, C, eps);
}

void cpu_add(const float *a, const float *b, float *out, long n) {
  for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_gelu(const float *x, float *out, long n) {
  for (long i = 0; i < n; i++) out[i] = gelu_f(x[i]);
}

/* Row n = b·T + t of qkv holds [q | k | v], head h at columns h·d .. h·d+d−1 of each third. */
void cpu_attention(const float *qkv, float *out, float *lse, long B, long T, long H, long d) {
  long D = H * d, D3 = 3 * D;
  double scale = 1.0 / sqrt((double)d);
  double *s = xmalloc((size_t)T * sizeof *s), *acc = xmalloc((size_t)d * sizeof *acc);
  for (long b = 0; b < B; b++)
    for (long h = 0; h < H; h++)
      for (long i = 0; i < T; i++) {
        const float *q = qkv + (b * T + i) * D3 + h * d;
        double mx = -INFINITY;
        for (long j = 0; j <= i; j++) {
          const float *k = qkv + (b * T + j) * D3 + D + h * d;
          double dot = 0;
          for (long e = 0; e < d; e++) dot += (double)q[e] * k[e];
          s[j] = dot * scale;
          if (s[j] > mx) mx = s[j];
        }
        double z = 0;
        for (long j = 0; j <= i; j++) z += exp(s[j] - mx);
        double l = mx + log(z);
        memset(acc, 0, (size_t)d * sizeof *acc);
        for (long j = 0; j <= i; j++) {
          const float *v = qkv + (b * T + j) * D3 + 2 * D + h * d;
          double pj = exp(s[j] - l);
          for (long e = 0; e < d; e++) acc[e] += pj * v[e];
        }
        for (long e = 0; e < d; e++) out[(b * T + i) * D + h * d + e] = (float)acc[e];
        lse[(b * H + h) * T + i] = (float)l;
      }
  free(s);
  free(acc);
}

/* loss_i = logsumexp(row[0:V]) − row[t]; gradient scale·(softmax_j − [j=t]) for j < V, 0 beyond. */
static void xent_row(const float *row, int32_t t, float *loss, float *grad, long V, long Vp, float scale) {
  if (t < 0) {
    *loss = 0;
    if (grad) memset(grad, 0, (size_t)Vp * sizeof *grad);
    return;
  }
  double mx = -INFINITY, z = 0;
  for (long j = 0; j < V; j++) if (row[j] > mx) mx = row[j];
  for (long j = 0; j < V; j++) z += exp((double)row[j] - mx);
  double l = mx + log(z);
  *loss = (float)(l - row[t]);
  if (grad) {
    for (long j = 0; j < V; j++) {
      double pj = exp((double)row[j] - l);
      grad[j] = (float)(scale * (pj - (j == t ? 1.0 : 0.0)));
    }
    for (long j = V; j < Vp; j++) grad[j] = 0;
  }
}

void cpu_xent(float *logits, const int32_t *targets, float *losses, long N, long V, long Vp, float scale,
              int grad) {
  for (long i = 0; i < N; i++)
    xent_row(logits + i * Vp, targets[i], &losses[i], grad ? logits + i * Vp : NULL, V, Vp, scale);
}

void cpu_xent_bwd(const float *logits, const int32_t *targets, float *dlogits, long N, long V, long Vp,
                  float scale) {
  for (long i = 0; i < N; i++) {
    float l;
    xent_row(logits + i * Vp, targets[i], &l, dlogits + i * Vp, V, Vp, scale);
  }
}

void cpu_loss_sum(const float *losses, float *loss, long N, float scale) {
  double s = 0;
  for (long i = 0; i < N; i++) s += losses[i];
  *loss = (float)((double)*loss + (double)scale * s);
}

void cpu_gelu_bwd(const float *x, const float *dout, float *dx, long n, int acc) {
  for (long i = 0; i < n; i++) {
    float g = dout[i] * gelu_grad_f(x[i]);
    dx[i] = acc ? dx[i] + g : g;
  }
}

void cpu_layernorm_bwd(const float *dout, const float *x, const float *w, const float *mean, const float *rstd,
                       float *dx, long N, long C, int acc) {
  for (long n = 0; n < N; n++) {
    const float *dy = dout + n * C, *xr = x + n * C;
    double mu = mean[n], rs = rstd[n], mg = 0, mgx = 0;
    for (long c = 0; c < C; c++) {
      double g = (double)dy[c] * w[c], xh = ((double)xr[c] - mu) * rs;
      mg += g;
      mgx += g * xh;
    }
    mg /= (double)C;
    mgx /= (double)C;
    for (long c = 0; c < C; c++) {
      double g = (double)dy[c] * w[c], xh = ((double)xr[c] - mu) * rs;
      float v = (float)(rs * (g - mg - xh * mgx));
      dx[n * C + c] = acc ? dx[n * C + c] + v : v;
    }
  }
}

void cpu_layernorm_bwd_params(const float *dout, const float *x, const float *mean, const float *rstd,
                              float *dw, float *db, long N, long C) {
  double *sw = xcalloc((size_t)C, sizeof *sw), *sb = xcalloc((size_t)C, sizeof *sb);
  for (long n = 0; n < N; n++) {
    double mu = mean[n], rs = rstd[n];
    for (long c = 0; c < C; c++) {
      double dy = dout[n * C + c];
      sw[c] += dy * ((double)x[n * C + c] - mu) * rs;
      sb[c] += dy;
    }
  }
  for (long c = 0; c < C; c++) { dw[c] = (float)(dw[c] + sw[c]); db[c] = (float)(db[c] + sb[c]); }
  free(sw);
  free(sb);
}

void cpu_bias_grad(const float *dout, float *db, long N, long C) {
  double *s = xcalloc((size_t)C, sizeof *s);
  for (long n = 0; n < N; n++)
    for (long c = 0; c < C; c++) s[c] += dout[n * C + c];
  for (long c = 0; c < C; c++) db[c] = (float)(db[c] + s[c]);
  free(s);
}

void cpu_attention_bwd_pre(const float *out, const float *dout, float *delta, long B, long T, long H, long d) {
  long D = H * d;
  for (long b = 0; b < B; b++)
    for (long h = 0; h < H; h++)
      for (long t = 0; t < T; t++) {
        const float *o = out + (b * T + t) * D + h * d, *g = dout + (b * T + t) * D + h * d;
        double s = 0;
        for (long e = 0; e < d; e++) s += (double)o[e] * g[e];
        delta[(b * H + h) * T + t] = (float)s;
      }
}

/* p_ij = exp(s_ij − lse_i) for j ≤ i; dp_ij = do_i·v_j; ds_ij = p_ij·(dp_ij − delta_i).
 * Computes (for one (b,h), query i and key j) p and ds. */
static void attn_p_ds(const float *qkv, const float *dout, const float *lse, const float *delta, long b, long h,
                      long i, long j, long T, long H, long d, double *p, double *ds) {
  long D = H * d, D3 = 3 * D;
  const float *q = qkv + (b * T + i) * D3 + h * d, *k = qkv + (b * T + j) * D3 + D + h * d;
  const float *v = qkv + (b * T + j) * D3 + 2 * D + h * d, *g = dout + (b * T + i) * D + h * d;
  double s = 0, dp = 0;
  for (long e = 0; e < d; e++) { s += (double)q[e] * k[e]; dp += (double)g[e] * v[e]; }
  s /= sqrt((double)d);
  *p = exp(s - lse[(b * H + h) * T + i]);
  *ds = *p * (dp - delta[(b * H + h) * T + i]);
}

void cpu_attention_bwd_dkdv(const float *qkv, const float *dout, const float *lse, const float *delta,
                            float *dqkv, long B, long T, long H, long d) {
  long D = H * d, D3 = 3 * D;
  double scale = 1.0 / sqrt((double)d);
  double *dk = xmalloc((size_t)d * sizeof *dk), *dv = xmalloc((size_t)d * sizeof *dv);
  for (long b = 0; b < B; b++)
    for (long h = 0; h < H; h++)
      for (long j = 0; j < T; j++) {
        memset(dk, 0, (size_t)d * sizeof *dk);
        memset(dv, 0, (size_t)d * sizeof *dv);
        for (long i = j; i < T; i++) {
          double p, ds;
          attn_p_ds(qkv, dout, lse, delta, b, h, i, j, T, H, d, &p, &ds);
          const float *q = qkv + (b * T + i) * D3 + h * d, *g = dout + (b * T + i) * D + h * d;
          for (long e = 0; e < d; e++) { dv[e] += p * g[e]; dk[e] += ds * q[e] * scale; }
        }
        float *row = dqkv + (b * T + j) * D3;
        for (long e = 0; e < d; e++) { row[D + h * d + e] = (float)dk[e]; row[2 * D + h * d + e] = (float)dv[e]; }
      }
  free(dk);
  free(dv);
}

void cpu_attention_bwd_dq(const float *qkv, const float *dout, const float *lse, const float *delta,
                          float *dqkv, long B, long T, long H, long d) {
  long D = H * d, D3 = 3 * D;
  double scale = 1.0 / sqrt((double)d);
  double *dq = xmalloc((size_t)d * sizeof *dq);
  for (long b = 0; b < B; b++)
    for (long h = 0; h < H; h++)
      for (long i = 0; i < T; i++) {
        memset(dq, 0, (size_t)d * sizeof *dq);
        for (long j = 0; j <= i; j++) {
          double p, ds;
          attn_p_ds(qkv, dout, lse, delta, b, h, i, j, T, H, d, &p, &ds);
          const float *k = qkv + (b * T + j) * D3 + D + h * d;
          for (long e = 0; e < d; e++) dq[e] += ds * k[e] * scale;
        }
        for (long e = 0; e < d; e++) dqkv[(b * T + i) * D3 + h * d + e] = (float)dq[e];
      }
  free(dq);
}

void cpu_embed_bwd_tok(const int32_t *tok, const float *dout, float *dwte, long N, long D) {
  for (long i = 0; i < N; i++) {
    float *w = dwte + (long)tok[i] * D;
    for (long c = 0; c < D; c++) w[c] += dout[i * D + c];
  }
}

void cpu_embed_bwd_pos(const float *dout, float *dwpe, long N, long T, long D) {
  double *s = xmalloc((size_t)D * sizeof *s);
  for (long t = 0; t < T; t++) {
    memset(s, 0, (size_t)D * sizeof *s);
    for (long n = t; n < N; n += T)
      for (long c = 0; c < D; c++) s[c] += dout[n * D + c];
    for (long c = 0; c < D; c++) dwpe[t * D + c] = (float)(dwpe[t * D + c] + s[c]);
  }
  free(s);
}

void cpu_sumsq(const float *grads, float *partials, long n, long G) {
  long chunk = (n + G - 1) / G;
  for (long g = 0; g < G; g++) {
    double s = 0;
    long lo = g * chunk, hi = lo + chunk < n ? lo + chunk : n;
    for (long i = lo; i < hi; i++) s += (double)grads[i] * grads[i];
    partials[g] = (float)s;
  }
}

void cpu_adamw(float *master, const float *grads, float *m, float *v, const float *scal, const float *partials,
               long n, long n_decay, long G, float wd, float beta1, float beta2, float eps, float clip) {
  double ss = 0;
  for (long g = 0; g < G; g++) ss += partials[g];
  double norm = sqrt(ss);
  double c = clip > 0 ? fmin(1.0, clip / (norm + 1e-6)) : 1.0;
  double lr = scal[0], bc1 = scal[1], bc2 = scal[2];
  for (long i = 0; i < n; i++) {
    double g = c * grads[i];
    double mi = beta1 * (double)m[i] + (1.0 - beta1) * g;
    double vi = beta2 * (double)v[i] + (1.0 - beta2) * g * g;
    m[i] = (float)mi;
    v[i] = (float)vi;
    double w = master[i], wdi = i < n_decay ? wd : 0.0;
    master[i] = (float)(w - lr * (wdi * w + (mi / bc1) / (sqrt(vi / bc2) + eps)));
  }
}

/* ---- decode program ---- */

void cpu_embed_pos(const int32_t *tok, int pos, const float *wte, const float *wpe, float *out, long N, long D) {
  for (long b = 0; b < N; b++)
    for (long i = 0; i < D; i++) out[b * D + i] = wte[(long)tok[b] * D + i] + wpe[(long)pos * D + i];
}

void cpu_attention_decode(const float *qkv, int pos, float *kcache, float *vcache, float *out, long B, long T,
                          long H, long d) {
  long D = H * d;
  double *s = xmalloc((size_t)(pos + 1) * sizeof *s);
  for (long b = 0; b < B; b++) {
    const float *q = qkv + b * 3 * D;
    float *kc = kcache + b * T * D, *vc = vcache + b * T * D;
    memcpy(kc + (long)pos * D, q + D, (size_t)D * sizeof *kc);
    memcpy(vc + (long)pos * D, q + 2 * D, (size_t)D * sizeof *vc);
    for (long h = 0; h < H; h++) {
      double mx = -INFINITY, sum = 0, scale = 1.0 / sqrt((double)d);
      for (long j = 0; j <= pos; j++) {
        double dot = 0;
        for (long i = 0; i < d; i++) dot += (double)q[h * d + i] * kc[j * D + h * d + i];
        s[j] = dot * scale;
        if (s[j] > mx) mx = s[j];
      }
      for (long j = 0; j <= pos; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
      for (long i = 0; i < d; i++) {
        double acc = 0;
        for (long j = 0; j <= pos; j++) acc += s[j] * vc[j * D + h * d + i];
        out[b * D + h * d + i] = (float)(acc / sum);
      }
    }
  }
  free(s);
}
