#!/usr/bin/env python3
"""PyTorch baseline for ParScale (seeds 000/001, models.md §4) on the Qwen2-0.5B shape: training and decoding.

    python3 bench/torch_parscale.py --what train  --P 4 --mode eager|compile [--batch 1] [--seq 2048]
    python3 bench/torch_parscale.py --what decode --P 4 [--prompt-tokens 64] [--new-tokens 128]
    /usr/bin/python3 bench/torch_parscale.py --check        (CPU, float64, tiny shape: decode == forward)

The model is specs/parscale_basic.lua written the way the seeds' users write it in PyTorch (Qwen2 blocks plus
ParScale, no cross-replica attention — parscale_basic has none):
  - Qwen2 backbone: 24 layers, D 896, 14 query heads / 2 key-value heads of 64, q/k/v biases, no o bias,
    RMSNorm (eps 1e-6), SwiGLU 4864, half-split RoPE base 1e6, tied embeddings, vocabulary 151936.
  - P replicas in one replica-major batch (row p·B + b is replica p of sequence b); per layer and replica
    NPRE = 48 prefix keys/values (parameters, never rotated) in front of the real keys, visible to every query:
    F.scaled_dot_product_attention with a boolean mask [T, NPRE + T] (prefix columns on, causal after) and the
    key/value heads repeated to the query heads (transformers' repeat_kv + SDPA path); P = 1 is plain Qwen2
    (is_causal, no prefix, no aggregation).
  - Aggregation before the head: h = RMSNorm(x), z[..., c·P + p] = h_p[..., c], a = fc2(SiLU(fc1(z))),
    w = (1 − ε)·softmax_p(a) + ε/P with ε = 0.01, y = Σ_p w_p·h_p, logits = y·wteᵀ; the loss is on B·T tokens.
Training: bench/torch_common.py's step (fp32 master, bf16 autocast, fused AdamW, clip 1.0), tok/s counts the
B·T tokens of the data (not the P·B·T replica rows), as moonforge's --bench does.

Decoding at batch 1 (what transformers' generate does, with a preallocated cache): bf16 weights; the cache of
each layer holds [P, Hkv, NPRE + T, d], its first NPRE entries the replica's prefix (written once); each step
runs the P streams of the one sequence as a batch of P rows, attends over the prefix and the past, aggregates,
takes the argmax and reads it back (.item()) — per token, so the time includes what feeding the next token
costs. Prints `BENCH_DECODE ms_per_token=<float> tok_per_s=<float>` last.
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common as C
from torch_common import RMSNorm, rope_half, rope_tables

PRESETS = {
    "parscale_basic": dict(L=24, D=896, H=14, Hkv=2, F=4864, V=151936, B=1, T=2048, NPRE=48, base=1e6),
    "tiny": dict(L=2, D=64, H=4, Hkv=2, F=96, V=300, B=2, T=24, NPRE=4, base=1e6),
}
EPS_SMOOTH = 0.01


def die(msg):
    C.die("torch_parscale", msg)


def sdpa(q, k, v, mask, causal):
    """softmax(q·kᵀ/√d + mask)·v; the written-out math where torch has no SDPA (the CPU check's torch)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        T, S = s.shape[-2], s.shape[-1]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v


class Attention(nn.Module):
    def __init__(self, c, P):
        super().__init__()
        D, H, Hkv = c["D"], c["H"], c["Hkv"]
        self.H, self.Hkv, self.d, self.P, self.NPRE = H, Hkv, D // H, P, c["NPRE"] if P > 1 else 0
        self.q_proj = nn.Linear(D, H * self.d, bias=True)
        self.k_proj = nn.Linear(D, Hkv * self.d, bias=True)
        self.v_proj = nn.Linear(D, Hkv * self.d, bias=True)
        self.o_proj = nn.Linear(H * self.d, D, bias=False)
        if P > 1:
            self.prefix_k = nn.Parameter(torch.randn(P, Hkv, self.NPRE, self.d) * 0.02)
            self.prefix_v = nn.Parameter(torch.randn(P, Hkv, self.NPRE, self.d) * 0.02)

    def qkv(self, x, cos, sin):
        R, T, _ = x.shape
        q = self.q_proj(x).view(R, T, self.H, self.d).transpose(1, 2)
        k = self.k_proj(x).view(R, T, self.Hkv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(R, T, self.Hkv, self.d).transpose(1, 2)
        return rope_half(q, cos, sin), rope_half(k, cos, sin), v

    def repeat_kv(self, t):
        return t.repeat_interleave(self.H // self.Hkv, dim=1)

    def forward(self, x, cos, sin, mask):
        """Training / full forward: x [P·B, T, D]."""
        R, T, D = x.shape
        q, k, v = self.qkv(x, cos, sin)
        if self.P > 1:
            B = R // self.P
            pk = self.prefix_k[:, None].expand(self.P, B, self.Hkv, self.NPRE, self.d).reshape(R, self.Hkv, self.NPRE, self.d)
            pv = self.prefix_v[:, None].expand(self.P, B, self.Hkv, self.NPRE, self.d).reshape(R, self.Hkv, self.NPRE, self.d)
            k, v = torch.cat((pk.to(k.dtype), k), dim=2), torch.cat((pv.to(v.dtype), v), dim=2)
        y = sdpa(q, self.repeat_kv(k), self.repeat_kv(v), mask if self.P > 1 else None, self.P == 1)
        return self.o_proj(y.transpose(1, 2).reshape(R, T, D))

    def step(self, x, cos, sin, cache, pos):
        """One decode position for the P rows x [P, 1, D]; cache (k, v) [P, Hkv, NPRE + T, d]."""
        q, k, v = self.qkv(x, cos, sin)
        ck, cv = cache
        n = self.NPRE + pos
        ck[:, :, n:n + 1] = k
        cv[:, :, n:n + 1] = v
        y = sdpa(q, self.repeat_kv(ck[:, :, :n + 1]), self.repeat_kv(cv[:, :, :n + 1]), None, False)
        return self.o_proj(y.transpose(1, 2).reshape(x.shape[0], 1, -1))


class Block(nn.Module):
    def __init__(self, c, P):
        super().__init__()
        self.input_layernorm = RMSNorm(c["D"])
        self.self_attn = Attention(c, P)
        self.post_attention_layernorm = RMSNorm(c["D"])
        self.gate_proj = nn.Linear(c["D"], c["F"], bias=False)
        self.up_proj = nn.Linear(c["D"], c["F"], bias=False)
        self.down_proj = nn.Linear(c["F"], c["D"], bias=False)

    def mlp(self, x):
        u = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(u)) * self.up_proj(u))

    def forward(self, x, cos, sin, mask):
        return self.mlp(x + self.self_attn(self.input_layernorm(x), cos, sin, mask))

    def step(self, x, cos, sin, cache, pos):
        return self.mlp(x + self.self_attn.step(self.input_layernorm(x), cos, sin, cache, pos))


class ParScaleQwen2(nn.Module):
    def __init__(self, c, P):
        super().__init__()
        self.c, self.P = c, P
        D, T, NPRE = c["D"], c["T"], c["NPRE"] if P > 1 else 0
        self.embed_tokens = nn.Embedding(c["V"], D)
        self.layers = nn.ModuleList(Block(c, P) for _ in range(c["L"]))
        self.norm = RMSNorm(D)
        if P > 1:
            self.agg_fc1 = nn.Linear(P * D, D)
            self.agg_fc2 = nn.Linear(D, P)
        cos, sin = rope_tables(T, D // c["H"], c["base"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        i = torch.arange(T)[:, None]
        j = torch.arange(NPRE + T)[None, :]
        self.register_buffer("mask", (j < NPRE) | (j - NPRE <= i), persistent=False)  # [T, NPRE + T]
        for n, p in self.named_parameters():
            if p.dim() >= 2 and "prefix" not in n:
                nn.init.normal_(p, 0.0, 0.02)
            elif n.endswith("bias"):
                nn.init.zeros_(p)

    def aggregate(self, h):
        """h [P·B, T, D] → y [B, T, D]: the softmax-weighted sum of the replicas (models.md §4)."""
        if self.P == 1:
            return h
        P = self.P
        hp = h.view(P, -1, *h.shape[1:])                        # [P, B, T, D]
        z = hp.permute(1, 2, 3, 0).reshape(*hp.shape[1:3], -1)  # [B, T, D·P], z[..., c·P + p] = h_p[..., c]
        w = self.agg_fc2(F.silu(self.agg_fc1(z))).softmax(-1) * (1 - EPS_SMOOTH) + EPS_SMOOTH / P  # [B, T, P]
        return torch.einsum("btp,pbtd->btd", w.to(hp.dtype), hp)

    def logits(self, idx):
        T = idx.shape[1]
        x = self.embed_tokens(idx).repeat(self.P, 1, 1)  # replica-major [P·B, T, D]
        cos, sin, mask = self.cos[:T], self.sin[:T], self.mask[:T, :self.mask.shape[1] - self.c["T"] + T]
        for blk in self.layers:
            x = blk(x, cos, sin, mask)
        return self.aggregate(self.norm(x)) @ self.embed_tokens.weight.t()

    def forward(self, idx, targets):
        lg = self.logits(idx)
        return F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), targets.reshape(-1))

    def new_cache(self, dtype):
        """Per layer (k, v) [P, Hkv, NPRE + T, d] for one sequence, the prefixes in front."""
        out = []
        for blk in self.layers:
            a = blk.self_attn
            k = torch.zeros(self.P, a.Hkv, a.NPRE + self.c["T"], a.d, dtype=dtype, device=self.cos.device)
            v = torch.zeros_like(k)
            if self.P > 1:
                k[:, :, :a.NPRE] = a.prefix_k.detach().to(dtype)
                v[:, :, :a.NPRE] = a.prefix_v.detach().to(dtype)
            out.append((k, v))
        return out

    @torch.no_grad()
    def step(self, tok, pos, cache):
        """Logits [V] after token `tok` at position `pos` of the one sequence."""
        x = self.embed_tokens.weight[tok].view(1, 1, -1).expand(self.P, 1, -1)
        cos, sin = self.cos[pos:pos + 1], self.sin[pos:pos + 1]
        for blk, kv in zip(self.layers, cache):
            x = blk.step(x, cos, sin, kv, pos)
        return (self.aggregate(self.norm(x)) @ self.embed_tokens.weight.t()).view(-1)


def flops_per_token(model, c):
    """6·(P·backbone + aggregation + head) + attention 6·P·L·H·(2d)·(T/2 + NPRE) per data token."""
    P = model.P
    emb = model.embed_tokens.weight.numel()
    agg = sum(p.numel() for n, p in model.named_parameters() if n.startswith("agg_"))
    body = sum(p.numel() for n, p in model.named_parameters() if n.startswith("layers.") and "prefix" not in n)
    d = c["D"] // c["H"]
    return 6 * (P * body + agg + emb) + 6 * P * c["L"] * c["H"] * 2 * d * (c["T"] / 2 + (c["NPRE"] if P > 1 else 0))


def bench_train(a, c, dev):
    model = ParScaleQwen2(c, a.P).to(dev)
    opt = C.adamw(model, lambda n, p: p.dim() == 2 and not n.startswith("embed_tokens"))
    step_model = torch.compile(model, mode=a.compile_mode) if a.mode == "compile" else model
    times, loss = C.time_training(model, step_model, opt, C.random_batches(c["V"], c["B"], c["T"], dev), a.warmup,
                                  a.steps, dev)
    n = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__} on {C.device_name(dev)}: ParScale-Qwen2 P={a.P} L={c['L']} D={c['D']} H={c['H']}/{c['Hkv']} "
          f"F={c['F']} V={c['V']} NPRE={c['NPRE'] if a.P > 1 else 0} N={n} B={c['B']} T={c['T']} "
          f"mode={a.mode}{'/' + a.compile_mode if a.mode == 'compile' else ''}")
    C.report_training(times, loss, c["B"] * c["T"], flops_per_token(model, c), a.peak_flops, dev)


def bench_decode(a, c, dev):
    model = ParScaleQwen2(c, a.P).to(dev).to(torch.bfloat16 if dev.type == "cuda" else torch.float32).eval()
    if a.prompt_tokens + a.new_tokens >= c["T"]:
        die(f"--prompt-tokens {a.prompt_tokens} + --new-tokens {a.new_tokens} must stay below T = {c['T']}")
    g = torch.Generator(device="cpu").manual_seed(0)
    prompt = torch.randint(0, c["V"], (a.prompt_tokens,), generator=g).tolist()
    times = []
    for rep in range(a.repeats):
        cache = model.new_cache(model.cos.dtype if dev.type != "cuda" else torch.bfloat16)
        for i, t in enumerate(prompt):
            lg = model.step(t, i, cache)
        tok = int(lg.argmax())
        C.sync(dev)
        t0 = time.perf_counter()
        for k in range(a.new_tokens):
            tok = int(model.step(tok, len(prompt) + k, cache).argmax())  # .item(): the next input
        C.sync(dev)
        times.append((time.perf_counter() - t0) / a.new_tokens)
    ms = statistics.median(times) * 1e3
    print(f"torch {torch.__version__} on {C.device_name(dev)}: ParScale-Qwen2 decode P={a.P} batch 1, "
          f"{a.prompt_tokens} prompt tokens, {a.new_tokens} greedy tokens, median of {a.repeats} (eager, bf16)")
    print(f"BENCH_DECODE ms_per_token={ms:.4f} tok_per_s={1e3 / ms:.1f}", flush=True)


def check():
    """CPU, float64, tiny: the decode path (cache, prefix, aggregation) gives the full forward's logits."""
    torch.set_default_dtype(torch.float64)
    c = PRESETS["tiny"]
    worst = 0.0
    for P in (1, 2, 4):
        torch.manual_seed(P)
        model = ParScaleQwen2(c, P)
        idx = torch.randint(0, c["V"], (1, c["T"]))
        with torch.no_grad():
            full = model.logits(idx)[0]
        cache = model.new_cache(torch.float64)
        inc = torch.stack([model.step(int(t), i, cache) for i, t in enumerate(idx[0])])
        err = float((inc - full).norm() / full.norm())
        worst = max(worst, err)
        print(f"P={P}: decode vs forward logits, relative L2 {err:.2e}")
    ok = worst < 1e-10
    print(f"check {'ok' if ok else 'FAILED'}: worst {worst:.2e} (tolerance 1e-10)")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description="PyTorch ParScale (Qwen2) training / decoding benchmark")
    ap.add_argument("--what", choices=("train", "decode"), default="train")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="parscale_basic")
    ap.add_argument("--P", type=int, default=4, help="parscale.n, the number of replicas")
    ap.add_argument("--batch", type=int, default=0, help="training micro-batch (default: the preset's)")
    ap.add_argument("--seq", type=int, default=0, help="sequence length (default: the preset's)")
    ap.add_argument("--mode", choices=("eager", "compile"), default="eager")
    ap.add_argument("--compile-mode", default="default")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="decode: runs of the timed tokens (median reported)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--peak-flops", type=float, default=989e12)
    ap.add_argument("--check", action="store_true", help="CPU self-check: decoding == the full forward")
    a = ap.parse_args()
    if a.check:
        raise SystemExit(check())
    c = dict(PRESETS[a.preset])
    c["B"], c["T"] = a.batch or c["B"], a.seq or c["T"]
    if a.P < 1 or c["B"] < 1 or c["T"] < 1 or a.steps < 1 or a.warmup < 0 or a.prompt_tokens < 1 or a.new_tokens < 1:
        die("--P, --batch, --seq, --steps, --prompt-tokens and --new-tokens must be ≥ 1 and --warmup ≥ 0")
    dev = C.setup_device("torch_parscale", a.device, a.mode if a.what == "train" else "eager")
    torch.manual_seed(1337)
    if a.what == "train":
        bench_train(a, c, dev)
    else:
        bench_decode(a, c, dev)


if __name__ == "__main__":
    main()
