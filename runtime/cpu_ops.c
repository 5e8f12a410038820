/* cpu_ops.c — fp32 reference math for every op kind (docs/ir.md). Straightforward loops; sums
 * that decide accuracy (norm statistics, softmax, dot products of attention) run in double so
 * that this backend is a trustworthy oracle. Matmuls use OpenBLAS sgemm. */
#include "cpu_ops.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

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
/* One row of softmax cross-entropy. exp(x − max) is computed once per logit (the row's
 * gradient buffer holds it until the sum is known); grad may alias row (the in-place xent). */
static void xent_row(const float *row, int32_t t, float *loss, float *grad, long V, long Vp, float scale) {
  if (t < 0) {
    *loss = 0;
    if (grad) memset(grad, 0, (size_t)Vp * sizeof *grad);
    return;
  }
  double mx = -INFINITY, z = 0;
  for (long j = 0; j < V; j++) if (row[j] > mx) mx = row[j];
  const double xt = row[t];
  if (grad) {
    for (long j = 0; j < V; j++) { double e = exp((double)row[j] - mx); z += e; grad[j] = (float)e; }
  } else {
    for (long j = 0; j < V; j++) z += exp((double)row[j] - mx);
  }
  *loss = (float)(mx + log(z) - xt);
  if (grad) {
    for (long j = 0; j < V; j++) grad[j] = (float)(scale * ((double)grad[j] / z - (j == t ? 1.0 : 0.0)));
    for (long j = V; j < Vp; j++) grad[j] = 0;
  }
}

/* Rows are independent: split them over the machine's cores (each row's arithmetic is the same
 * whichever thread does it, so results do not depend on the thread count). */
typedef struct { const float *in; float *out; const int32_t *targets; float *losses; long lo, hi, V, Vp; float scale; } XentJob;

static void *xent_worker(void *arg) {
  XentJob *j = arg;
  for (long i = j->lo; i < j->hi; i++) {
    float l;
    xent_row(j->in + i * j->Vp, j->targets[i], j->losses ? &j->losses[i] : &l, j->out ? j->out + i * j->Vp : NULL,
             j->V, j->Vp, j->scale);
  }
  return NULL;
}

static void xent_rows(const float *in, float *out, const int32_t *targets, float *losses, long N, long V, long Vp,
                      float scale) {
  enum { MAXT = 16 };
  long nt = sysconf(_SC_NPROCESSORS_ONLN);
  if (nt < 1) nt = 1;
  if (nt > MAXT) nt = MAXT;
  if (nt > N) nt = N > 0 ? N : 1;
  XentJob jobs[MAXT];
  pthread_t th[MAXT];
  for (long k = 0; k < nt; k++) {
    jobs[k] = (XentJob){in, out, targets, losses, N * k / nt, N * (k + 1) / nt, V, Vp, scale};
    if (k > 0 && pthread_create(&th[k], NULL, xent_worker, &jobs[k]) != 0) fatal("xent: cannot start a thread");
  }
  xent_worker(&jobs[0]);
  for (long k = 1; k < nt; k++) pthread_join(th[k], NULL);
}

void cpu_xent(float *logits, const int32_t *targets, float *losses, long N, long V, long Vp, float scale,
              int grad) {
  xent_rows(logits, grad ? logits : NULL, targets, losses, N, V, Vp, scale);
}

void cpu_xent_bwd(const float *logits, const int32_t *targets, float *dlogits, long N, long V, long Vp,
                  float scale) {
  xent_rows(logits, dlogits, targets, NULL, N, V, Vp, scale);
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

void cpu_sumsq(const float *grads, float *partials, long lo, long hi, long G) {
  long len = hi > lo ? hi - lo : 0, chunk = (len + G - 1) / G;
  for (long g = 0; g < G; g++) {
    double s = 0;
    long a = lo + g * chunk, b = a + chunk < hi ? a + chunk : hi;
    for (long i = a; i < b; i++) s += (double)grads[i] * grads[i];
    partials[g] = (float)s;
  }
}

void cpu_adamw(float *master, const float *grads, float *m, float *v, const float *scal, const float *partials,
               long lo, long hi, long n_decay, long G, float wd, float beta1, float beta2, float eps, float clip) {
  double ss = 0;
  for (long g = 0; g < G; g++) ss += partials[g];
  double norm = sqrt(ss);
  double c = clip > 0 ? fmin(1.0, clip / (norm + 1e-6)) : 1.0;
  double lr = scal[0], bc1 = scal[1], bc2 = scal[2];
  for (long i = lo; i < hi; i++) {
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

/* ======== the model vocabulary (docs/ir_decoder.md) ======== */

/* ---- norms ---- */

/* rstd = 1/√(Σx²/C + eps), out = x·rstd·w */
void cpu_rmsnorm(const float *x, const float *w, float *out, float *rstd, long N, long C, float eps) {
  for (long n = 0; n < N; n++) {
    const float *xr = x + n * C;
    double ss = 0;
    for (long c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
    double rs = 1.0 / sqrt(ss / (double)C + (double)eps);
    for (long c = 0; c < C; c++) out[n * C + c] = (float)((double)xr[c] * rs * w[c]);
    rstd[n] = (float)rs;
  }
}

void cpu_add_rmsnorm(const float *a, const float *b, const float *w, float *sum, float *out, float *rstd, long N,
                     long C, float eps) {
  cpu_add(a, b, sum, N * C);
  cpu_rmsnorm(sum, w, out, rstd, N, C, eps);
}

/* g = dout·w, x̂ = x·rstd: dx (+)= rstd·(g − x̂·mean_c(g·x̂)). (rstd depends on x through Σx²:
 * d rstd/dx_c = −rstd³·x_c/C, which gives the x̂·mean(g·x̂) term.) */
void cpu_rmsnorm_bwd(const float *dout, const float *x, const float *w, const float *rstd, float *dx, long N, long C,
                     int acc) {
  for (long n = 0; n < N; n++) {
    const float *dy = dout + n * C, *xr = x + n * C;
    double rs = rstd[n], mgx = 0;
    for (long c = 0; c < C; c++) mgx += (double)dy[c] * w[c] * ((double)xr[c] * rs);
    mgx /= (double)C;
    for (long c = 0; c < C; c++) {
      double g = (double)dy[c] * w[c], xh = (double)xr[c] * rs;
      float v = (float)(rs * (g - xh * mgx));
      dx[n * C + c] = acc ? dx[n * C + c] + v : v;
    }
  }
}

/* dw += Σ_n dout·x·rstd */
void cpu_rmsnorm_bwd_params(const float *dout, const float *x, const float *rstd, float *dw, long N, long C) {
  double *sw = xcalloc((size_t)C, sizeof *sw);
  for (long n = 0; n < N; n++)
    for (long c = 0; c < C; c++) sw[c] += (double)dout[n * C + c] * ((double)x[n * C + c] * rstd[n]);
  for (long c = 0; c < C; c++) dw[c] = (float)(dw[c] + sw[c]);
  free(sw);
}

/* DyT (Zhu et al. 2025): out = w·tanh(α·x) + b */
void cpu_dyt(const float *x, const float *alpha, const float *w, const float *b, float *out, long N, long C) {
  double al = alpha[0];
  for (long n = 0; n < N; n++)
    for (long c = 0; c < C; c++) out[n * C + c] = (float)(w[c] * tanh(al * x[n * C + c]) + b[c]);
}

void cpu_add_dyt(const float *a, const float *b, const float *alpha, const float *w, const float *bias, float *sum,
                 float *out, long N, long C) {
  cpu_add(a, b, sum, N * C);
  cpu_dyt(sum, alpha, w, bias, out, N, C);
}

/* dx (+)= dout·w·α·(1 − tanh²(α·x)) */
void cpu_dyt_bwd(const float *dout, const float *x, const float *alpha, const float *w, float *dx, long N, long C,
                 int acc) {
  double al = alpha[0];
  for (long n = 0; n < N; n++)
    for (long c = 0; c < C; c++) {
      double th = tanh(al * x[n * C + c]);
      float v = (float)((double)dout[n * C + c] * w[c] * al * (1.0 - th * th));
      dx[n * C + c] = acc ? dx[n * C + c] + v : v;
    }
}

/* dalpha += Σ dout·w·x·(1 − tanh²(α·x)),  dw += Σ_n dout·tanh(α·x),  db += Σ_n dout */
void cpu_dyt_bwd_params(const float *dout, const float *x, const float *alpha, float *dalpha, const float *w,
                        float *dw, float *db, long N, long C) {
  double al = alpha[0], sa = 0;
  double *sw = xcalloc((size_t)C, sizeof *sw), *sb = xcalloc((size_t)C, sizeof *sb), *ss = xcalloc((size_t)C, sizeof *ss);
  for (long n = 0; n < N; n++)
    for (long c = 0; c < C; c++) {
      double dy = dout[n * C + c], xv = x[n * C + c], th = tanh(al * xv);
      sw[c] += dy * th;
      sb[c] += dy;
      ss[c] += dy * xv * (1.0 - th * th);
    }
  for (long c = 0; c < C; c++) {
    dw[c] = (float)(dw[c] + sw[c]);
    db[c] = (float)(db[c] + sb[c]);
    sa += w[c] * ss[c];
  }
  dalpha[0] = (float)(dalpha[0] + sa);
  free(sw);
  free(sb);
  free(ss);
}

/* ---- activations ---- */

static double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

void cpu_relu(const float *x, float *out, long n) {
  for (long i = 0; i < n; i++) out[i] = x[i] > 0 ? x[i] : 0.0f;
}

/* dx (+)= dout·[x > 0] */
void cpu_relu_bwd(const float *x, const float *dout, float *dx, long n, int acc) {
  for (long i = 0; i < n; i++) {
    float g = x[i] > 0 ? dout[i] : 0.0f;
    dx[i] = acc ? dx[i] + g : g;
  }
}

/* silu(x) = x·σ(x) */
void cpu_silu(const float *x, float *out, long n) {
  for (long i = 0; i < n; i++) out[i] = (float)(x[i] * sigmoid_d(x[i]));
}

/* silu'(x) = σ(x)·(1 + x·(1 − σ(x))) */
static double silu_grad_d(double x) {
  double s = sigmoid_d(x);
  return s * (1.0 + x * (1.0 - s));
}

void cpu_silu_bwd(const float *x, const float *dout, float *dx, long n, int acc) {
  for (long i = 0; i < n; i++) {
    float g = (float)(dout[i] * silu_grad_d(x[i]));
    dx[i] = acc ? dx[i] + g : g;
  }
}

static double glu_act(double x, int act) { return act ? x * sigmoid_d(x) : (double)gelu_f((float)x); }
static double glu_act_grad(double x, int act) { return act ? silu_grad_d(x) : (double)gelu_grad_f((float)x); }

/* x [N, 2F] = [gate | up]: out = act(gate) ⊙ up */
void cpu_glu(const float *x, float *out, long N, long F, int act) {
  for (long n = 0; n < N; n++)
    for (long f = 0; f < F; f++) {
      const float *r = x + n * 2 * F;
      out[n * F + f] = (float)(glu_act(r[f], act) * r[F + f]);
    }
}

/* dx[:, :F] = dout⊙up⊙act'(gate), dx[:, F:] = dout⊙act(gate)  (written) */
void cpu_glu_bwd(const float *x, const float *dout, float *dx, long N, long F, int act) {
  for (long n = 0; n < N; n++)
    for (long f = 0; f < F; f++) {
      const float *r = x + n * 2 * F;
      double g = dout[n * F + f];
      dx[n * 2 * F + f] = (float)(g * r[F + f] * glu_act_grad(r[f], act));
      dx[n * 2 * F + F + f] = (float)(g * glu_act(r[f], act));
    }
}

/* ---- dropout ---- */

/* x = seed ^ stream·K1 ^ ctr·K2 ^ i·K3 (uint64, wrapping), then the splitmix64 finaliser */
uint64_t mf_drop_hash(uint64_t seed, uint64_t stream, uint64_t ctr, uint64_t i) {
  uint64_t z = seed ^ (stream * 0x9E3779B97F4A7C15ull) ^ (ctr * 0xD1B54A32D192ED03ull) ^ (i * 0x8CB92BA72F3D8DD7ull);
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* the top 24 bits as a float in [0, 1): exact, so CPU and GPU compare the same number with p */
float mf_drop_uniform(uint64_t seed, uint64_t stream, uint64_t ctr, uint64_t i) {
  return (float)(mf_drop_hash(seed, stream, ctr, i) >> 40) * 0x1p-24f;
}

/* seed and counter of a dropctr pair (non-negative int32s, see docs/ir_decoder.md) */
static uint64_t ctr_u(int32_t v) { return (uint64_t)(uint32_t)v; }

/* out = keep ? x/(1−p) : 0, keep iff u ≥ p; the scale is the float 1/(1−p) on both backends */
void cpu_dropout(const float *x, const int32_t *ctr, float *out, long n, float p, long stream) {
  uint64_t seed = ctr_u(ctr[0]), c = ctr_u(ctr[1]);
  float s = 1.0f / (1.0f - p);
  for (long i = 0; i < n; i++)
    out[i] = mf_drop_uniform(seed, (uint64_t)stream, c, (uint64_t)i) >= p ? x[i] * s : 0.0f;
}

void cpu_dropout_bwd(const float *dout, const int32_t *ctr, float *dx, long n, float p, long stream, int acc) {
  uint64_t seed = ctr_u(ctr[0]), c = ctr_u(ctr[1]);
  float s = 1.0f / (1.0f - p);
  for (long i = 0; i < n; i++) {
    float g = mf_drop_uniform(seed, (uint64_t)stream, c, (uint64_t)i) >= p ? dout[i] * s : 0.0f;
    dx[i] = acc ? dx[i] + g : g;
  }
}

/* ---- embeddings and MLA ---- */

void cpu_embed_tok(const int32_t *tok, const float *wte, float *out, long N, long D) {
  for (long i = 0; i < N; i++) memcpy(out + i * D, wte + (long)tok[i] * D, (size_t)D * sizeof *out);
}

/* k[n, h·(dn+dr) …] = [knope[n, h·dn … h·dn+dn−1] ; R_t·krope[n, 0 … dr−1]],  t = n mod T: the shared rope
 * key rotated once here (rope = 1 half-split, 2 adjacent; 0: copied as it is) so that the attention that
 * reads k rotates q only (its attr KROT = 1). */
void cpu_mla_k(const float *knope, const float *krope, float *k, long N, long H, long dn, long dr, int rope, long T,
               float base) {
  long w = dn + dr;
  double *r = xmalloc((size_t)dr * sizeof *r);
  for (long n = 0; n < N; n++) {
    for (long j = 0; j < dr; j++) r[j] = krope[n * dr + j];
    if (rope) attn_rope(r, dr, dr, rope, base, n % T, 0);
    for (long h = 0; h < H; h++) {
      float *row = k + n * H * w + h * w;
      memcpy(row, knope + n * H * dn + h * dn, (size_t)dn * sizeof *row);
      for (long j = 0; j < dr; j++) row[dn + j] = (float)r[j];
    }
  }
  free(r);
}

/* dknope[n, h] = dk[n, h, :dn];  dkrope[n] = R_tᵀ Σ_h dk[n, h, dn:] (h ascending; both written) */
void cpu_mla_k_bwd(const float *dk, float *dknope, float *dkrope, long N, long H, long dn, long dr, int rope, long T,
                   float base) {
  long w = dn + dr;
  double *r = xmalloc((size_t)dr * sizeof *r);
  for (long n = 0; n < N; n++) {
    for (long h = 0; h < H; h++) memcpy(dknope + n * H * dn + h * dn, dk + n * H * w + h * w, (size_t)dn * sizeof *dk);
    for (long j = 0; j < dr; j++) {
      double s = 0;
      for (long h = 0; h < H; h++) s += dk[n * H * w + h * w + dn + j];
      r[j] = s;
    }
    if (rope) attn_rope(r, dr, dr, rope, base, n % T, 1);
    for (long j = 0; j < dr; j++) dkrope[n * dr + j] = (float)r[j];
  }
  free(r);
}

/* ---- generalised attention ---- */

/* ALiBi slopes (Press et al. 2022). P = the largest power of two ≤ H:
 *   m_h = 2^(−8(h+1)/P) for h < P;  m_h = 2^(−4(2(h−P)+1)/P) for P ≤ h < H
 * (the second line: every other slope of the 2P-head sequence, as the paper's reference code). */
double attn_alibi_slope(long h, long H) {
  long P = 1;
  while (2 * P <= H) P *= 2;
  return h < P ? exp2(-8.0 * (double)(h + 1) / (double)P) : exp2(-4.0 * (double)(2 * (h - P) + 1) / (double)P);
}

/* RoPE on the last R dims of a head (slice offset DQK − R). Pair p < R/2 is (p, p + R/2)
 * (mode 1, half-split / rotate_half) or (2p, 2p + 1) (mode 2, adjacent), turned by t·θ_p,
 * θ_p = base^(−2p/R). Like the Hugging Face rotary embedding (and the GPU kernels), θ_p and the
 * angle t·θ_p are fp32 numbers; cos and sin are then taken in double.
 *   forward (x1, x2) → (x1·cos − x2·sin, x2·cos + x1·sin);  inverse (Rᵀ): sin → −sin */
void attn_rope(double *x, long DQK, long R, int mode, float base, long t, int inverse) {
  double *s = x + (DQK - R);
  for (long p = 0; p < R / 2; p++) {
    float th = (float)(1.0 / pow((double)base, (double)(2 * p) / (double)R));
    double ang = (double)((float)t * th), cs = cos(ang), sn = inverse ? -sin(ang) : sin(ang);
    long i1 = mode == 1 ? p : 2 * p, i2 = mode == 1 ? p + R / 2 : 2 * p + 1;
    double x1 = s[i1], x2 = s[i2];
    s[i1] = x1 * cs - x2 * sn;
    s[i2] = x2 * cs + x1 * sn;
  }
}

static int attn_visible(const CpuAttn *a, long i, long j) {
  return j <= i && (a->WINDOW == 0 || i - j < a->WINDOW || j < a->SINK);
}

/* The q (kv = 0, head h) or k (kv = 1, kv head h) rows of batch b: [T][DQK] doubles, rotated when `rotate`
 * (the forward; the backward's q, k are the forward's rotated copies qr, kr) — k rows not with KROT (they
 * arrive rotated). */
static double *attn_rows(const CpuAttn *a, const float *base, int kv, long b, long h, int rotate) {
  long ld = kv ? a->LDK : a->LDQ, off = (kv ? a->KOFF : a->QOFF) + h * (kv ? a->KHS : a->QHS), D = a->DQK;
  double *r = xmalloc((size_t)(a->T * D) * sizeof *r);
  for (long t = 0; t < a->T; t++) {
    const float *src = base + (b * a->T + t) * ld + off;
    for (long e = 0; e < D; e++) r[t * D + e] = src[e];
    if (rotate && a->ROPE && !(kv && a->KROT)) attn_rope(r + t * D, D, a->ROPE_DIM, (int)a->ROPE, a->rope_base, t, 0);
  }
  return r;
}

/* Store rows from attn_rows into q's (kv = 0) or k's (kv = 1) layout: the forward's qr, kr. */
static void attn_store_rows(const CpuAttn *a, const double *r, float *base, int kv, long b, long h) {
  long ld = kv ? a->LDK : a->LDQ, off = (kv ? a->KOFF : a->QOFF) + h * (kv ? a->KHS : a->QHS), D = a->DQK;
  for (long t = 0; t < a->T; t++)
    for (long e = 0; e < D; e++) base[(b * a->T + t) * ld + off + e] = (float)r[t * D + e];
}

static const float *attn_v(const CpuAttn *a, const float *v, long b, long t, long g) {
  return v + (b * a->T + t) * a->LDV + a->VOFF + g * a->VHS;
}

/* Dropout factor of p_ij: keep/(1 − dropout), keep decided by the hash of
 * i = ((b·H + h)·T + query)·T + key; 1 without dropout. */
static double attn_zf(const CpuAttn *a, long b, long h, long i, long j) {
  if (a->dropout <= 0) return 1.0;
  uint64_t idx = (((uint64_t)b * (uint64_t)a->H + (uint64_t)h) * (uint64_t)a->T + (uint64_t)i) * (uint64_t)a->T + (uint64_t)j;
  float u = mf_drop_uniform(ctr_u(a->ctr[0]), (uint64_t)a->stream, ctr_u(a->ctr[1]), idx);
  return u >= a->dropout ? (double)(1.0f / (1.0f - a->dropout)) : 0.0;
}

/* Scores of query i against keys 0..i: s[j] = c·(q̃_i·k̃_j) − m_h·(i − j), −∞ where not visible. */
static void attn_scores(const CpuAttn *a, const double *Q, const double *K, long h, long i, double *s) {
  double c = a->scale, m = a->ALIBI ? attn_alibi_slope(h, a->H) : 0.0;
  for (long j = 0; j <= i; j++) {
    if (!attn_visible(a, i, j)) { s[j] = -INFINITY; continue; }
    double dot = 0;
    for (long e = 0; e < a->DQK; e++) dot += Q[i * a->DQK + e] * K[j * a->DQK + e];
    s[j] = c * dot - m * (double)(i - j);
  }
}

/* ParScale prefixes (docs/ir_parscale.md): the NPRE prefix keys of batch row b's replica
 * p = b / (B/NREP) for kv head g, and their scores ŝ_n = c·(q̃_i·K̂_n) — never rotated, no ALiBi term,
 * always visible. */
static const float *attn_pre(const CpuAttn *a, const float *base, long width, long b, long g, long n) {
  long p = b / (a->B / a->NREP);
  return base + ((p * a->HKV + g) * a->NPRE + n) * width;
}

static void attn_pre_scores(const CpuAttn *a, const double *Q, long b, long g, long i, double *ps) {
  for (long n = 0; n < a->NPRE; n++) {
    const float *kr = attn_pre(a, a->pk, a->DQK, b, g, n);
    double dot = 0;
    for (long e = 0; e < a->DQK; e++) dot += Q[i * a->DQK + e] * kr[e];
    ps[n] = a->scale * dot;
  }
}

/* lse_i = log(Σ_n exp(ŝ_in) + Σ_vis exp(s_ij));  out_i = Σ_n p̂_in·V̂_n + Σ_j p_ij·zf_ij·v_j */
void cpu_attn(const CpuAttn *a, const float *q, const float *k, const float *v, float *out, float *lse, float *qr,
              float *kr) {
  long T = a->T, DV = a->DV;
  double *s = xmalloc((size_t)T * sizeof *s), *acc = xmalloc((size_t)DV * sizeof *acc);
  double *ps = xmalloc((size_t)(a->NPRE + 1) * sizeof *ps);
  for (long b = 0; b < a->B; b++)
    for (long h = 0; h < a->H; h++) {
      long g = h * a->HKV / a->H;
      double *Q = attn_rows(a, q, 0, b, h, 1), *K = attn_rows(a, k, 1, b, g, 1);
      if (qr) attn_store_rows(a, Q, qr, 0, b, h);
      if (kr && h == g * (a->H / a->HKV)) attn_store_rows(a, K, kr, 1, b, g);
      for (long i = 0; i < T; i++) {
        attn_scores(a, Q, K, h, i, s);
        attn_pre_scores(a, Q, b, g, i, ps);
        double mx = -INFINITY, z = 0;
        for (long j = 0; j <= i; j++) if (s[j] > mx) mx = s[j];
        for (long n = 0; n < a->NPRE; n++) if (ps[n] > mx) mx = ps[n];
        for (long j = 0; j <= i; j++) z += exp(s[j] - mx);
        for (long n = 0; n < a->NPRE; n++) z += exp(ps[n] - mx);
        double l = mx + log(z);
        memset(acc, 0, (size_t)DV * sizeof *acc);
        for (long n = 0; n < a->NPRE; n++) {
          double pn = exp(ps[n] - l);
          const float *vr = attn_pre(a, a->pv, DV, b, g, n);
          for (long e = 0; e < DV; e++) acc[e] += pn * vr[e];
        }
        for (long j = 0; j <= i; j++) {
          if (s[j] == -INFINITY) continue;
          double pj = exp(s[j] - l) * attn_zf(a, b, h, i, j);
          if (pj == 0) continue;
          const float *vr = attn_v(a, v, b, j, g);
          for (long e = 0; e < DV; e++) acc[e] += pj * vr[e];
        }
        for (long e = 0; e < DV; e++) out[(b * T + i) * a->H * DV + h * DV + e] = (float)acc[e];
        lse[(b * a->H + h) * T + i] = (float)l;
      }
      free(Q);
      free(K);
    }
  free(s);
  free(acc);
  free(ps);
}

/* One decode step (docs/ir.md "Decode"): sequence b's token sits at position pos; its q, k, v are
 * row b of q, k, v (the attn layout with one row per sequence). The caches hold what the training
 * path's attention sees after RoPE: kcache [B, T, HKV, DQK] = k̃_j = R_j·K_j (rotated once, at its
 * own position j), vcache [B, T, HKV, DV]. The op appends row pos, then for query head h
 *   s_j = c·(q̃·k̃_j) − ALIBI·m_h·(pos − j)   for vis(pos, j),  q̃ = R_pos·Q
 *   out_h = Σ_j softmax_j(s)·v_j                                  (dropout never applies)
 * With ParScale prefixes (NPRE > 0) the softmax also runs over the NPRE entries of b's replica
 * p = b/(B/NREP): ŝ_n = c·(q̃·K̂_n), values V̂_n, read from pk, pv (never rotated, no ALiBi, always visible). */
void cpu_attn_decode(const CpuAttn *a, const float *q, const float *k, const float *v, int pos, float *kcache,
                     float *vcache, float *out) {
  long T = a->T, DQK = a->DQK, DV = a->DV, HKV = a->HKV;
  double *s = xmalloc((size_t)(pos + 1) * sizeof *s), *acc = xmalloc((size_t)DV * sizeof *acc);
  double *qr = xmalloc((size_t)DQK * sizeof *qr), *ps = xmalloc((size_t)(a->NPRE + 1) * sizeof *ps);
  for (long b = 0; b < a->B; b++) {
    float *kc = kcache + b * T * HKV * DQK, *vc = vcache + b * T * HKV * DV;
    for (long g = 0; g < HKV; g++) {
      const float *kr = k + b * a->LDK + a->KOFF + g * a->KHS, *vr = v + b * a->LDV + a->VOFF + g * a->VHS;
      for (long e = 0; e < DQK; e++) qr[e] = kr[e];
      if (a->ROPE) attn_rope(qr, DQK, a->ROPE_DIM, (int)a->ROPE, a->rope_base, pos, 0);
      for (long e = 0; e < DQK; e++) kc[((long)pos * HKV + g) * DQK + e] = (float)qr[e];
      memcpy(vc + ((long)pos * HKV + g) * DV, vr, (size_t)DV * sizeof *vc);
    }
    for (long h = 0; h < a->H; h++) {
      long g = h * HKV / a->H;
      const float *qh = q + b * a->LDQ + a->QOFF + h * a->QHS;
      for (long e = 0; e < DQK; e++) qr[e] = qh[e];
      if (a->ROPE) attn_rope(qr, DQK, a->ROPE_DIM, (int)a->ROPE, a->rope_base, pos, 0);
      double m = a->ALIBI ? attn_alibi_slope(h, a->H) : 0.0, mx = -INFINITY, z = 0;
      attn_pre_scores(a, qr, b, g, 0, ps);   /* the prefix entries of b's replica (none when NPRE = 0) */
      for (long n = 0; n < a->NPRE; n++) if (ps[n] > mx) mx = ps[n];
      for (long j = 0; j <= pos; j++) {
        if (!attn_visible(a, pos, j)) { s[j] = -INFINITY; continue; }
        const float *kj = kc + (j * HKV + g) * DQK;
        double dot = 0;
        for (long e = 0; e < DQK; e++) dot += qr[e] * kj[e];
        s[j] = a->scale * dot - m * (double)(pos - j);
        if (s[j] > mx) mx = s[j];
      }
      memset(acc, 0, (size_t)DV * sizeof *acc);
      for (long n = 0; n < a->NPRE; n++) {
        double p = exp(ps[n] - mx);
        const float *vn = attn_pre(a, a->pv, DV, b, g, n);
        z += p;
        for (long e = 0; e < DV; e++) acc[e] += p * vn[e];
      }
      for (long j = 0; j <= pos; j++) {
        if (s[j] == -INFINITY) continue;
        double p = exp(s[j] - mx);
        const float *vj = vc + (j * HKV + g) * DV;
        z += p;
        for (long e = 0; e < DV; e++) acc[e] += p * vj[e];
      }
      for (long e = 0; e < DV; e++) out[b * a->H * DV + h * DV + e] = (float)(acc[e] / z);
    }
  }
  free(s); free(acc); free(qr); free(ps);
}

void cpu_attn_bwd_pre(const float *out, const float *dout, float *delta, long B, long T, long H, long DV) {
  for (long b = 0; b < B; b++)
    for (long h = 0; h < H; h++)
      for (long t = 0; t < T; t++) {
        const float *o = out + (b * T + t) * H * DV + h * DV, *g = dout + (b * T + t) * H * DV + h * DV;
        double s = 0;
        for (long e = 0; e < DV; e++) s += (double)o[e] * g[e];
        delta[(b * H + h) * T + t] = (float)s;
      }
}

/* Row i of the backward for (b, h): p_ij (pt: with the dropout factor) and
 * ds_ij = p_ij·(zf_ij·(do_i·v_j) − delta_i) for j ≤ i (0 where not visible). */
static void attn_bwd_row(const CpuAttn *a, const double *Q, const double *K, const float *v, const float *dout,
                         const float *lse, const float *delta, long b, long h, long i, double *s, double *pt,
                         double *ds) {
  long T = a->T, g = h * a->HKV / a->H;
  const float *dor = dout + (b * T + i) * a->H * a->DV + h * a->DV;
  double l = lse[(b * a->H + h) * T + i], del = delta[(b * a->H + h) * T + i];
  attn_scores(a, Q, K, h, i, s);
  for (long j = 0; j <= i; j++) {
    if (s[j] == -INFINITY) { pt[j] = ds[j] = 0; continue; }
    double p = exp(s[j] - l), zf = attn_zf(a, b, h, i, j), dp = 0;
    const float *vr = attn_v(a, v, b, j, g);
    for (long e = 0; e < a->DV; e++) dp += (double)dor[e] * vr[e];
    pt[j] = p * zf;
    ds[j] = p * (zf * dp - del);
  }
}

/* The prefix part of row i (docs/ir_parscale.md): p̂_in and d̂s_in = p̂_in·(dout_i·V̂_n − delta_i). */
static void attn_bwd_pre_row(const CpuAttn *a, const double *Q, const float *dout, const float *lse,
                             const float *delta, long b, long h, long i, double *pp, double *pds) {
  long T = a->T, g = h * a->HKV / a->H;
  const float *dor = dout + (b * T + i) * a->H * a->DV + h * a->DV;
  double l = lse[(b * a->H + h) * T + i], del = delta[(b * a->H + h) * T + i];
  attn_pre_scores(a, Q, b, g, i, pp);
  for (long n = 0; n < a->NPRE; n++) {
    const float *vr = attn_pre(a, a->pv, a->DV, b, g, n);
    double p = exp(pp[n] - l), dp = 0;
    for (long e = 0; e < a->DV; e++) dp += (double)dor[e] * vr[e];
    pp[n] = p;
    pds[n] = p * (dp - del);
  }
}

/* dv_j = Σ_{h in group} Σ_i p̃_ij·do_i;  dk_j = R_jᵀ Σ_{h in group} Σ_i c·ds_ij·q̃_i (no R_jᵀ with KROT: dk is then
 * the gradient of the rotated k̃ the op was given);
 * prefixes: dpk[b, g, n] = Σ_{h in group} Σ_i c·d̂s_in·q̃_i,  dpv[b, g, n] = Σ_{h in group} Σ_i p̂_in·do_i (written) */
void cpu_attn_bwd_dkdv(const CpuAttn *a, const float *q, const float *k, const float *v, const float *dout,
                       const float *lse, const float *delta, float *dk, float *dv, float *dpk, float *dpv) {
  long T = a->T, DQK = a->DQK, DV = a->DV, G = a->H / a->HKV, NP = a->NPRE;
  double *s = xmalloc((size_t)T * sizeof *s), *pt = xmalloc((size_t)T * sizeof *pt), *ds = xmalloc((size_t)T * sizeof *ds);
  double *dK = xmalloc((size_t)(T * DQK) * sizeof *dK), *dV = xmalloc((size_t)(T * DV) * sizeof *dV);
  double *pp = xmalloc((size_t)(NP + 1) * sizeof *pp), *pds = xmalloc((size_t)(NP + 1) * sizeof *pds);
  double *dPK = xmalloc((size_t)(NP * DQK + 1) * sizeof *dPK), *dPV = xmalloc((size_t)(NP * DV + 1) * sizeof *dPV);
  for (long b = 0; b < a->B; b++)
    for (long g = 0; g < a->HKV; g++) {
      memset(dK, 0, (size_t)(T * DQK) * sizeof *dK);
      memset(dV, 0, (size_t)(T * DV) * sizeof *dV);
      memset(dPK, 0, (size_t)(NP * DQK) * sizeof *dPK);
      memset(dPV, 0, (size_t)(NP * DV) * sizeof *dPV);
      double *K = attn_rows(a, k, 1, b, g, 0);
      for (long h = g * G; h < (g + 1) * G; h++) {
        double *Q = attn_rows(a, q, 0, b, h, 0);
        for (long i = 0; i < T; i++) {
          attn_bwd_row(a, Q, K, v, dout, lse, delta, b, h, i, s, pt, ds);
          const float *dor = dout + (b * T + i) * a->H * DV + h * DV;
          for (long j = 0; j <= i; j++) {
            if (pt[j] == 0 && ds[j] == 0) continue;
            for (long e = 0; e < DQK; e++) dK[j * DQK + e] += a->scale * ds[j] * Q[i * DQK + e];
            for (long e = 0; e < DV; e++) dV[j * DV + e] += pt[j] * dor[e];
          }
          if (NP == 0) continue;
          attn_bwd_pre_row(a, Q, dout, lse, delta, b, h, i, pp, pds);
          for (long n = 0; n < NP; n++) {
            for (long e = 0; e < DQK; e++) dPK[n * DQK + e] += a->scale * pds[n] * Q[i * DQK + e];
            for (long e = 0; e < DV; e++) dPV[n * DV + e] += pp[n] * dor[e];
          }
        }
        free(Q);
      }
      for (long n = 0; n < NP; n++) {
        float *kr = dpk + ((b * a->HKV + g) * NP + n) * DQK, *vr = dpv + ((b * a->HKV + g) * NP + n) * DV;
        for (long e = 0; e < DQK; e++) kr[e] = (float)dPK[n * DQK + e];
        for (long e = 0; e < DV; e++) vr[e] = (float)dPV[n * DV + e];
      }
      for (long j = 0; j < T; j++) {
        if (a->ROPE && !a->KROT) attn_rope(dK + j * DQK, DQK, a->ROPE_DIM, (int)a->ROPE, a->rope_base, j, 1);
        float *kr = dk + (b * T + j) * a->LDK + a->KOFF + g * a->KHS, *vr = dv + (b * T + j) * a->LDV + a->VOFF + g * a->VHS;
        for (long e = 0; e < DQK; e++) kr[e] = (float)dK[j * DQK + e];
        for (long e = 0; e < DV; e++) vr[e] = (float)dV[j * DV + e];
      }
      free(K);
    }
  free(s); free(pt); free(ds); free(dK); free(dV); free(pp); free(pds); free(dPK); free(dPV);
}

/* dq_i = R_iᵀ (Σ_j c·ds_ij·k̃_j + Σ_n c·d̂s_in·K̂_n) */
void cpu_attn_bwd_dq(const CpuAttn *a, const float *q, const float *k, const float *v, const float *dout,
                     const float *lse, const float *delta, float *dq) {
  long T = a->T, DQK = a->DQK, NP = a->NPRE;
  double *s = xmalloc((size_t)T * sizeof *s), *pt = xmalloc((size_t)T * sizeof *pt), *ds = xmalloc((size_t)T * sizeof *ds);
  double *acc = xmalloc((size_t)DQK * sizeof *acc);
  double *pp = xmalloc((size_t)(NP + 1) * sizeof *pp), *pds = xmalloc((size_t)(NP + 1) * sizeof *pds);
  for (long b = 0; b < a->B; b++)
    for (long h = 0; h < a->H; h++) {
      long g = h * a->HKV / a->H;
      double *Q = attn_rows(a, q, 0, b, h, 0), *K = attn_rows(a, k, 1, b, g, 0);
      for (long i = 0; i < T; i++) {
        attn_bwd_row(a, Q, K, v, dout, lse, delta, b, h, i, s, pt, ds);
        memset(acc, 0, (size_t)DQK * sizeof *acc);
        for (long j = 0; j <= i; j++)
          if (ds[j] != 0)
            for (long e = 0; e < DQK; e++) acc[e] += a->scale * ds[j] * K[j * DQK + e];
        if (NP > 0) {
          attn_bwd_pre_row(a, Q, dout, lse, delta, b, h, i, pp, pds);
          for (long n = 0; n < NP; n++) {
            const float *kr = attn_pre(a, a->pk, DQK, b, g, n);
            for (long e = 0; e < DQK; e++) acc[e] += a->scale * pds[n] * kr[e];
          }
        }
        if (a->ROPE) attn_rope(acc, DQK, a->ROPE_DIM, (int)a->ROPE, a->rope_base, i, 1);
        float *qr = dq + (b * T + i) * a->LDQ + a->QOFF + h * a->QHS;
        for (long e = 0; e < DQK; e++) qr[e] = (float)acc[e];
      }
      free(Q);
      free(K);
    }
  free(s); free(pt); free(ds); free(acc); free(pp); free(pds);
}

/* ---- ParScale (docs/ir_parscale.md) ---- */

/* out[p·N + i, c] = x[i, c] */
void cpu_ps_replicate(const float *x, float *out, long N, long C, long P) {
  for (long p = 0; p < P; p++) memcpy(out + p * N * C, x, (size_t)(N * C) * sizeof *out);
}

/* dx[i, c] (+)= Σ_p dout[p·N + i, c], p ascending */
void cpu_ps_replicate_bwd(const float *dout, float *dx, long N, long C, long P, int acc) {
  for (long i = 0; i < N * C; i++) {
    double s = 0;
    for (long p = 0; p < P; p++) s += dout[p * N * C + i];
    dx[i] = acc ? (float)(dx[i] + s) : (float)s;
  }
}

/* out[i, c·P + p] = x[p·N + i, c] */
void cpu_interleave(const float *x, float *out, long N, long D, long P) {
  for (long i = 0; i < N; i++)
    for (long c = 0; c < D; c++)
      for (long p = 0; p < P; p++) out[i * P * D + c * P + p] = x[(p * N + i) * D + c];
}

/* dx[p·N + i, c] (+)= dout[i, c·P + p] */
void cpu_interleave_bwd(const float *dout, float *dx, long N, long D, long P, int acc) {
  for (long p = 0; p < P; p++)
    for (long i = 0; i < N; i++)
      for (long c = 0; c < D; c++) {
        float g = dout[i * P * D + c * P + p];
        float *o = dx + (p * N + i) * D + c;
        *o = acc ? *o + g : g;
      }
}

/* grad[p, r] += Σ_{b<Bm} partial[p·Bm + b, r], b ascending */
void cpu_prefix_grad_reduce(const float *partial, float *grad, long NREP, long Bm, long ROW) {
  for (long p = 0; p < NREP; p++)
    for (long r = 0; r < ROW; r++) {
      double s = 0;
      for (long b = 0; b < Bm; b++) s += partial[(p * Bm + b) * ROW + r];
      grad[p * ROW + r] = (float)(grad[p * ROW + r] + s);
    }
}

/* The P×P scores of cross-replica attention at position i, head h: s[p·P + r] = c·(q_p·k_r) */
static void cra_scores(const float *qkv, long N, long P, long H, long d, float scale, long i, long h, double *s) {
  long W = H * d;
  for (long p = 0; p < P; p++)
    for (long r = 0; r < P; r++) {
      const float *qp = qkv + (p * N + i) * 3 * W + h * d, *kr = qkv + (r * N + i) * 3 * W + W + h * d;
      double dot = 0;
      for (long e = 0; e < d; e++) dot += (double)qp[e] * kr[e];
      s[p * P + r] = scale * dot;
    }
}

/* lse[p·N + i, h] = log Σ_r exp(s_pr);  out[p·N + i, h·d + e] = Σ_r π_pr·v_r[e] */
void cpu_cra(const float *qkv, float *out, float *lse, long N, long P, long H, long d, float scale) {
  long W = H * d;
  double *s = xmalloc((size_t)(P * P) * sizeof *s);
  for (long i = 0; i < N; i++)
    for (long h = 0; h < H; h++) {
      cra_scores(qkv, N, P, H, d, scale, i, h, s);
      for (long p = 0; p < P; p++) {
        double mx = -INFINITY, z = 0;
        for (long r = 0; r < P; r++) if (s[p * P + r] > mx) mx = s[p * P + r];
        for (long r = 0; r < P; r++) z += exp(s[p * P + r] - mx);
        double l = mx + log(z);
        lse[(p * N + i) * H + h] = (float)l;
        for (long e = 0; e < d; e++) {
          double acc = 0;
          for (long r = 0; r < P; r++) acc += exp(s[p * P + r] - l) * qkv[(r * N + i) * 3 * W + 2 * W + h * d + e];
          out[(p * N + i) * W + h * d + e] = (float)acc;
        }
      }
    }
  free(s);
}

/* π_pr = exp(s_pr − lse_p), dπ_pr = dout_p·v_r, δ_p = Σ_r π_pr·dπ_pr, ds_pr = π_pr·(dπ_pr − δ_p);
 * dq_p = c·Σ_r ds_pr·k_r, dk_r = c·Σ_p ds_pr·q_p, dv_r = Σ_p π_pr·dout_p (every column written) */
void cpu_cra_bwd(const float *qkv, const float *dout, const float *lse, float *dqkv, long N, long P, long H, long d,
                 float scale) {
  long W = H * d;
  double *s = xmalloc((size_t)(P * P) * sizeof *s), *ds = xmalloc((size_t)(P * P) * sizeof *ds);
  for (long i = 0; i < N; i++)
    for (long h = 0; h < H; h++) {
      cra_scores(qkv, N, P, H, d, scale, i, h, s);
      for (long p = 0; p < P; p++) {
        const float *dop = dout + (p * N + i) * W + h * d;
        double l = lse[(p * N + i) * H + h], delta = 0;
        for (long r = 0; r < P; r++) {
          const float *vr = qkv + (r * N + i) * 3 * W + 2 * W + h * d;
          double dp = 0;
          for (long e = 0; e < d; e++) dp += (double)dop[e] * vr[e];
          s[p * P + r] = exp(s[p * P + r] - l); /* now π */
          ds[p * P + r] = dp;
          delta += s[p * P + r] * dp;
        }
        for (long r = 0; r < P; r++) ds[p * P + r] = s[p * P + r] * (ds[p * P + r] - delta);
      }
      for (long x = 0; x < P; x++) {
        float *drow = dqkv + (x * N + i) * 3 * W; /* replica x's row: its q, k and v gradients */
        for (long e = 0; e < d; e++) {
          double gq = 0, gk = 0, gv = 0;
          for (long y = 0; y < P; y++) {
            gq += ds[x * P + y] * qkv[(y * N + i) * 3 * W + W + h * d + e];
            gk += ds[y * P + x] * qkv[(y * N + i) * 3 * W + h * d + e];
            gv += s[y * P + x] * dout[(y * N + i) * W + h * d + e];
          }
          drow[h * d + e] = (float)(scale * gq);
          drow[W + h * d + e] = (float)(scale * gk);
          drow[2 * W + h * d + e] = (float)gv;
        }
      }
    }
  free(s);
  free(ds);
}

/* l_p = a[i, p] + b2[p], σ = softmax_p(l), w[i, p] = (1−eps)·σ_p + eps/P, y[i, c] = Σ_p w[i, p]·h[p·N + i, c] */
void cpu_ps_aggregate(const float *h, const float *a, const float *b2, float *y, float *w, long N, long D, long P,
                      float eps) {
  double *wd = xmalloc((size_t)P * sizeof *wd), *l = xmalloc((size_t)P * sizeof *l);
  for (long i = 0; i < N; i++) {
    double mx = -INFINITY, z = 0;
    for (long p = 0; p < P; p++) {
      l[p] = (double)a[i * P + p] + b2[p];
      if (l[p] > mx) mx = l[p];
    }
    for (long p = 0; p < P; p++) z += exp(l[p] - mx);
    for (long p = 0; p < P; p++) {
      double sig = exp(l[p] - mx) / z;
      w[i * P + p] = (float)((1.0 - (double)eps) * sig + (double)eps / (double)P);
      wd[p] = w[i * P + p];
    }
    for (long c = 0; c < D; c++) {
      double acc = 0;
      for (long p = 0; p < P; p++) acc += wd[p] * h[(p * N + i) * D + c];
      y[i * D + c] = (float)acc;
    }
  }
  free(wd);
  free(l);
}

/* dh[p·N + i] (+)= w[i, p]·dy[i];  g_p = dy[i]·h[p·N + i], σ_p = (w_p − eps/P)/(1 − eps),
 * da[i, p] = (1 − eps)·σ_p·(g_p − Σ_q σ_q·g_q) (written);  db2[p] += Σ_i da[i, p] (i ascending, of the
 * values as stored in da) */
void cpu_ps_aggregate_bwd(const float *dy, const float *h, const float *w, float *dh, float *da, float *db2, long N,
                          long D, long P, float eps, int acc) {
  double *g = xmalloc((size_t)P * sizeof *g), *sig = xmalloc((size_t)P * sizeof *sig);
  double e = eps;
  for (long i = 0; i < N; i++) {
    double gs = 0;
    for (long p = 0; p < P; p++) {
      const float *hp = h + (p * N + i) * D;
      float *dhp = dh + (p * N + i) * D;
      double dot = 0;
      for (long c = 0; c < D; c++) {
        dot += (double)dy[i * D + c] * hp[c];
        float v = (float)((double)w[i * P + p] * dy[i * D + c]);
        dhp[c] = acc ? dhp[c] + v : v;
      }
      g[p] = dot;
      sig[p] = ((double)w[i * P + p] - e / (double)P) / (1.0 - e);
      gs += sig[p] * dot;
    }
    for (long p = 0; p < P; p++) da[i * P + p] = (float)((1.0 - e) * sig[p] * (g[p] - gs));
  }
  for (long p = 0; p < P; p++) {
    double sb = 0;
    for (long i = 0; i < N; i++) sb += da[i * P + p];
    db2[p] = (float)(db2[p] + sb);
  }
  free(g);
  free(sig);
}
