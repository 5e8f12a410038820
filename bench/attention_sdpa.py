#!/usr/bin/env python3
"""PyTorch attention kernels alone: the comparison for moonforge's attention kernel benchmark.

    python3 bench/attention_sdpa.py [--seqs 1024,4096,16384] [--dims 64,128] [--tokens 16384] [--width 2048]
                                    [--window 256] [--sink 4] [--iters 10] [--warmup 3] [--backend default]

For each sequence length T and head dim d (bf16, B = tokens/T sequences, H = width/d heads, so every shape moves
the same number of tokens), forward and forward+backward time and TFLOP/s of
    sdpa causal   F.scaled_dot_product_attention(q, k, v, is_causal=True) (flash on Hopper; --backend picks one)
    flex causal   compiled FlexAttention with a causal block mask
    flex swa      compiled FlexAttention with the sliding window + sinks block mask: query i sees key j iff
                  j ≤ i and (i − j < W or j < S), W = 256 keys including the query, S = 4 sinks
    sdpa swa      SDPA with the same mask as an explicit boolean [T, T] tensor (no tile skipping; --no-sdpa-swa
                  leaves it out)
FLOPs count only the (query, key) pairs the mask allows: forward 4·B·H·d·pairs (q·kᵀ and p·v), backward 2.5×
the forward (FlashAttention's convention), so forward+backward = 3.5 × forward; pairs = T(T+1)/2 for causal and
Σ_i [min(i+1, W) + max(0, min(S, i−W+1))] for the window. Times are the median of --iters after --warmup, with
CUDA events. One line per measurement:

    ATTN impl=<sdpa|flex> mask=<causal|swa> T=… d=… B=… H=… fwd_ms=… fwd_tflops=… fwdbwd_ms=… fwdbwd_tflops=…

then a Markdown table. Smoke test without a GPU: --device cpu --seqs 64,128 --dims 16 --tokens 256 --width 64
--window 8 --sink 2 (the written-out math where torch lacks SDPA / FlexAttention).
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def die(msg):
    print(f"attention_sdpa: {msg}", file=sys.stderr)
    sys.exit(1)


def pairs_causal(T):
    return T * (T + 1) // 2


def pairs_swa(T, W, S):
    n = 0
    for i in range(T):
        n += min(i + 1, W) + max(0, min(S, i - W + 1))
    return n


def swa_bool_mask(T, W, S, device):
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (((i - j) < W) | (j < S))


def explicit(q, k, v, mask):
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v


class Timer:
    def __init__(self, cuda):
        self.cuda = cuda

    def __call__(self, fn, iters, warmup):
        for _ in range(warmup):
            fn()
        ts = []
        for _ in range(iters):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                ts.append(a.elapsed_time(b) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
        return statistics.median(ts)


def make_impls(a, T, device):
    """name -> (mask kind, attention callable(q, k, v))."""
    impls = {}
    have_sdpa = hasattr(F, "scaled_dot_product_attention")
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    swa = swa_bool_mask(T, a.window, a.sink, device)
    if have_sdpa:
        ctx = None
        if a.backend != "default":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                  "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[a.backend]
            ctx = lambda: sdpa_kernel(be)  # noqa: E731

        def sdpa(**kw):
            def f(q, k, v):
                if ctx is None:
                    return F.scaled_dot_product_attention(q, k, v, **kw)
                with ctx():
                    return F.scaled_dot_product_attention(q, k, v, **kw)
            return f
        impls["sdpa causal"] = ("causal", sdpa(is_causal=True))
        if not a.no_sdpa_swa:
            impls["sdpa swa"] = ("swa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=swa))
    else:
        impls["math causal"] = ("causal", lambda q, k, v: explicit(q, k, v, causal))
        impls["math swa"] = ("swa", lambda q, k, v: explicit(q, k, v, swa))
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return impls
    W, S = a.window, a.sink

    def causal_mod(b, h, qi, ki):
        return ki <= qi

    def swa_mod(b, h, qi, ki):
        return (ki <= qi) & (((qi - ki) < W) | (ki < S))
    flex = torch.compile(flex_attention, dynamic=False) if device.type == "cuda" else flex_attention
    for name, mod, kind in (("flex causal", causal_mod, "causal"), ("flex swa", swa_mod, "swa")):
        bm = create_block_mask(mod, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)
        impls[name] = (kind, lambda q, k, v, bm=bm: flex(q, k, v, block_mask=bm))
    return impls


def main():
    ap = argparse.ArgumentParser(description="PyTorch attention forward / forward+backward TFLOP/s")
    ap.add_argument("--seqs", default="1024,4096,16384")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--tokens", type=int, default=16384, help="B·T of every shape")
    ap.add_argument("--width", type=int, default=2048, help="H·d of every shape")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--sink", type=int, default=4)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backend", choices=("default", "flash", "cudnn", "efficient", "math"), default="default")
    ap.add_argument("--no-sdpa-swa", action="store_true", help="skip SDPA with the explicit SWA mask")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    a = ap.parse_args()
    try:
        seqs = [int(x) for x in a.seqs.split(",") if x]
        dims = [int(x) for x in a.dims.split(",") if x]
    except ValueError:
        die("--seqs and --dims are comma-separated integers")
    if not seqs or not dims or min(seqs + dims) < 1 or a.window < 1 or a.sink < 0 or a.iters < 1:
        die("--seqs, --dims, --window, --iters must be ≥ 1 and --sink ≥ 0")
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        die("--device cuda: no CUDA device visible to torch")
    dev = torch.device(a.device)
    dt = torch.bfloat16 if cuda else torch.float32
    timer = Timer(cuda)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"torch {torch.__version__} on {name}: {str(dt).replace('torch.', '')}, tokens {a.tokens}, width {a.width}, "
          f"SWA W={a.window} S={a.sink}, median of {a.iters} after {a.warmup}, sdpa backend {a.backend}")
    rows = []
    for d in dims:
        for T in seqs:
            B, H = max(1, a.tokens // T), max(1, a.width // d)
            g = torch.Generator(device="cpu").manual_seed(0)
            q, k, v, do = (torch.randn(B, H, T, d, generator=g).to(dev, dt) for _ in range(4))
            q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
            for iname, (kind, fn) in make_impls(a, T, dev).items():
                pairs = pairs_causal(T) if kind == "causal" else pairs_swa(T, a.window, a.sink)
                fl = 4.0 * B * H * d * pairs
                try:
                    with torch.no_grad():
                        t_f = timer(lambda: fn(q, k, v), a.iters, a.warmup)

                    def fb():
                        q.grad = k.grad = v.grad = None
                        fn(q, k, v).backward(do)
                    t_fb = timer(fb, a.iters, a.warmup)
                except Exception as e:  # out of memory, a kernel that does not support the shape: report it, go on
                    print(f"ATTN impl={iname.split()[0]} mask={kind} T={T} d={d} B={B} H={H} FAILED: "
                          f"{str(e).splitlines()[0][:160]}", flush=True)
                    rows.append((iname, T, d, None, None, None, None))
                    if cuda:
                        torch.cuda.empty_cache()
                    continue
                tf, tfb = fl / t_f / 1e12, 3.5 * fl / t_fb / 1e12
                print(f"ATTN impl={iname.split()[0]} mask={kind} T={T} d={d} B={B} H={H} fwd_ms={t_f * 1e3:.3f} "
                      f"fwd_tflops={tf:.1f} fwdbwd_ms={t_fb * 1e3:.3f} fwdbwd_tflops={tfb:.1f}", flush=True)
                rows.append((iname, T, d, t_f, tf, t_fb, tfb))
            del q, k, v, do
            if cuda:
                torch.cuda.empty_cache()
    print()
    print("| kernel | T | d | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for iname, T, d, t_f, tf, t_fb, tfb in rows:
        if t_f is None:
            print(f"| {iname} | {T} | {d} | failed | | | |")
        else:
            print(f"| {iname} | {T} | {d} | {t_f * 1e3:.3f} | {tf:.1f} | {t_fb * 1e3:.3f} | {tfb:.1f} |")
    # the target: SWA at the longest T at least 10× faster (fwd+bwd time) than causal at the same T
    Tm = max(seqs)
    for d in dims:
        c = [r for r in rows if r[1] == Tm and r[2] == d and r[0] in ("sdpa causal", "math causal") and r[5]]
        s = [r for r in rows if r[1] == Tm and r[2] == d and r[0] in ("flex swa", "math swa") and r[5]]
        if c and s:
            print(f"speed-up of {s[0][0]} over {c[0][0]} at T={Tm} d={d} (fwd+bwd time): {c[0][5] / s[0][5]:.1f}x")


if __name__ == "__main__":
    main()
