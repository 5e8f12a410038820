/* check.h — correctness checks: against a golden file from the PyTorch reference, finite
 * differences on the CPU backend, and the GPU backend op by op against the CPU backend. Each
 * prints one line per compared tensor/op and returns 0 when everything is within tolerance. */
#ifndef MF_CHECK_H
#define MF_CHECK_H
#include "backend.h"
#include <stdint.h>

/* Golden file (tests/reference/gpt2_ref.py): init.<param>, tokens/targets [S,B·accum,T] i32,
 * logits [B,T,V] or [B·accum,T,V] (step 0, before the update), loss [1], grad.<param>, losses [S].
 * tol: relative L2 for logits/grads; loss_tol: relative error of each loss.
 * The S steps use the plan's schedule (train steps, or S when the plan has none).
 * ntol_for named tensors (tol_for_name[i], e.g. "grad.parscale.agg.fc1.bias") are held to
 * tol_for[i] instead of tol — for the few sums whose bf16 error is known to be larger; the
 * report marks them. */
int check_golden(Backend *b, const char *path, double tol, double loss_tol, int ntol_for, char *const *tol_for_name,
                 const double *tol_for);
/* Directional finite differences of the micro-step-0 loss for every parameter tensor. */
int check_gradcheck(Backend *cpu, uint64_t seed);
/* Every op of micro-step 0 (then the opt ops) on both backends from identical inputs. */
int check_ops(Backend *cpu, Backend *gpu, uint64_t seed, double tol);

/* ‖out − ref‖ / ‖ref‖ in double (‖out − ref‖ / 1e-12 when ref is all zeros; inf on NaN). */
double rel_l2(const float *out, const float *ref, long n);
/* Teacher-forced decoding through the KV cache gives the forward pass's logits at every position
 * (relative L2 over the first sequence ≤ tol). Returns nonzero on failure. */
int check_decode(Backend *b, uint64_t seed, double tol);
#endif
