#!/usr/bin/env python3
"""PyTorch baseline for the SWA-MLA training benchmark (swamla_small / swamla_base against moonforge).

    python3 bench/torch_decoder.py --preset swamla_small --mode eager|compile [--swa flex|mask] \
        [--batch 8] [--seq 2048] [--steps 15] [--warmup 5]

The model of specs/swamla_*.lua (seed 002) written the way a strong PyTorch user writes it: layers in cycles of
two sliding-window blocks then one multi-head latent attention block; pre-RMSNorm (eps 1e-6), SwiGLU MLP (c_fc
rows [gate; up]), no biases, tied embeddings over the padded vocabulary (50304), RoPE (half-split on the SWA
layers' full head dim; adjacent pairs on MLA's rope dims), base 10000.
  - SWA (window W = 256 keys including the query, S = 4 sink tokens: query i sees key j iff j ≤ i and
    (i − j < W or j < S)) through compiled FlexAttention with a block mask (--swa flex, default), so key blocks
    outside window ∪ sinks are skipped; or SDPA with the explicit boolean mask (--swa mask).
  - MLA (kv rank 256, q rank 0, nope 128 + rope 64, v 128): q = q_proj x; [c; k̃r] = kv_a x; c ← RMSNorm(c);
    [k_n; v] = kv_b c per head; k_r = RoPE(k̃r) shared by every head; F.scaled_dot_product_attention(is_causal,
    scale 1/√192) on q = [q_n; q_r], k = [k_n; k_r], v.
fp32 master weights with bf16 autocast, torch.optim.AdamW(fused=True) with weight decay on the matmul weights only,
clip_grad_norm_(1.0), warmup + cosine lr, random tokens resident on the GPU, optionally torch.compile (the whole
model; FlexAttention is compiled in both modes, as it must be to be fast).

A step (zero_grad, forward+loss, backward, clip, AdamW) is timed with torch.cuda.synchronize + perf_counter; the
median over --steps after --warmup untimed steps is reported. The LAST line printed is exactly

    BENCH tok_per_s=<float> ms_per_step=<float> mfu=<float>

with MFU = flops_per_token·tok_per_s / peak (peak 989e12, H100/H200 dense bf16) and, as bin/gen counts them,
flops_per_token = 6·N + Σ_layers 6·ctx·H·(d_qk + d_v), N every parameter (the tied head once), ctx = T/2 for a
causal layer and min(T/2, W + S) for a sliding-window layer.

Smoke test without a GPU: --device cpu --preset tiny (3 layers, D 64, 4 heads, V 500, T 64, W 8, S 2, MLA ranks
32 / nope 16 / rope 16 / v 16; explicit-mask attention where torch lacks SDPA / FlexAttention; no compile).
"""
import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common as C
from torch_common import RMSNorm, rope_half, rope_tables

PRESETS = {
    # L, D, H, F, B, T, V, W, S, kv_rank, nope, rope, v
    "swamla_small": dict(L=12, D=1024, H=16, F=4096, B=8, T=2048, V=50257, W=256, S=4, r=256, dn=128, dr=64, dv=128),
    "swamla_base": dict(L=24, D=1536, H=16, F=6144, B=4, T=2048, V=50257, W=256, S=4, r=256, dn=128, dr=64, dv=128),
    "tiny": dict(L=3, D=64, H=4, F=256, B=2, T=64, V=500, W=8, S=2, r=32, dn=16, dr=16, dv=16),
}


def die(msg):
    C.die("torch_decoder", msg)


def rope_adjacent(x, cos, sin):  # pairs (2i, 2i+1)
    xs = x.unflatten(-1, (-1, 2))
    a, b = xs[..., 0], xs[..., 1]
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)


def explicit_attention(q, k, v, mask, scale):
    """The math, for old torch on the CPU: softmax(q·kᵀ·scale masked)·v."""
    s = (q @ k.transpose(-1, -2)) * scale
    return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def swa_bool_mask(T, W, S, device):
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (((i - j) < W) | (j < S))


class SWAAttention(nn.Module):
    def __init__(self, c, attn):
        super().__init__()
        self.H, self.d = c["H"], c["D"] // c["H"]
        self.c_attn = nn.Linear(c["D"], 3 * c["D"], bias=False)
        self.c_proj = nn.Linear(c["D"], c["D"], bias=False)
        self.attn = attn  # callable(q, k, v) -> y, the sliding window + sinks inside

    def forward(self, x, cos, sin):
        B, T, D = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.H, self.d).permute(2, 0, 3, 1, 4)
        q, k = rope_half(q, cos, sin), rope_half(k, cos, sin)
        y = self.attn(q, k, v)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, D))


class MLAAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.H, self.dn, self.dr, self.dv, self.r = c["H"], c["dn"], c["dr"], c["dv"], c["r"]
        D, H = c["D"], c["H"]
        self.q_proj = nn.Linear(D, H * (self.dn + self.dr), bias=False)
        self.kv_a = nn.Linear(D, self.r + self.dr, bias=False)
        self.kv_a_norm = RMSNorm(self.r)
        self.kv_b = nn.Linear(self.r, H * (self.dn + self.dv), bias=False)
        self.c_proj = nn.Linear(H * self.dv, D, bias=False)
        self.scale = 1.0 / math.sqrt(self.dn + self.dr)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, dn, dr, dv = self.H, self.dn, self.dr, self.dv
        q = self.q_proj(x).view(B, T, H, dn + dr).transpose(1, 2)
        q_n, q_r = q.split([dn, dr], dim=-1)
        c, k_r = self.kv_a(x).split([self.r, dr], dim=-1)
        kv = self.kv_b(self.kv_a_norm(c)).view(B, T, H, dn + dv).transpose(1, 2)
        k_n, v = kv.split([dn, dv], dim=-1)
        k_r = rope_adjacent(k_r.unsqueeze(1), cos, sin)  # [B, 1, T, dr], shared by every head
        q = torch.cat((q_n, rope_adjacent(q_r, cos, sin)), dim=-1)
        k = torch.cat((k_n, k_r.expand(B, H, T, dr)), dim=-1)
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = explicit_attention(q, k, v, mask, self.scale)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, H * dv))


class Block(nn.Module):
    def __init__(self, c, kind, swa_attn):
        super().__init__()
        self.kind = kind
        self.ln_1 = RMSNorm(c["D"])
        self.attn = SWAAttention(c, swa_attn) if kind == "swa" else MLAAttention(c)
        self.ln_2 = RMSNorm(c["D"])
        self.F = c["F"]
        self.c_fc = nn.Linear(c["D"], 2 * c["F"], bias=False)  # rows [gate; up]
        self.c_proj = nn.Linear(c["F"], c["D"], bias=False)

    def forward(self, x, ropes):
        x = x + self.attn(self.ln_1(x), *ropes[self.kind])
        gate, up = self.c_fc(self.ln_2(x)).split(self.F, dim=-1)
        return x + self.c_proj(F.silu(gate) * up)


class SWAMLA(nn.Module):
    def __init__(self, c, Vp, swa_attn):
        super().__init__()
        L, D, T = c["L"], c["D"], c["T"]
        self.kinds = ["swa" if l % 3 < 2 else "mla" for l in range(L)]
        self.wte = nn.Embedding(Vp, D)
        self.h = nn.ModuleList(Block(c, k, swa_attn) for k in self.kinds)
        self.ln_f = RMSNorm(D)
        self.lm_head = nn.Linear(D, Vp, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        cs, ss = rope_tables(T, D // c["H"])
        cm, sm = rope_tables(T, c["dr"])
        for n, t in (("cos_swa", cs), ("sin_swa", ss), ("cos_mla", cm), ("sin_mla", sm)):
            self.register_buffer(n, t, persistent=False)
        proj_std = 0.02 / math.sqrt(2 * L)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, proj_std if name.endswith("c_proj.weight") else 0.02)

    def forward(self, idx, targets):
        ropes = {"swa": (self.cos_swa, self.sin_swa), "mla": (self.cos_mla, self.sin_mla)}
        x = self.wte(idx)
        for blk in self.h:
            x = blk(x, ropes)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1))


def make_swa_attention(c, impl, mode, device):
    """The sliding-window + sinks attention callable: compiled FlexAttention with a block mask, or SDPA with an
    explicit boolean mask (or the written-out math where torch has neither)."""
    T, W, S, d = c["T"], c["W"], c["S"], c["D"] // c["H"]
    if impl == "flex":
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        except ImportError:
            die(f"--swa flex: torch {torch.__version__} has no FlexAttention (use --swa mask)")

        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (((q_idx - kv_idx) < W) | (kv_idx < S))
        block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)
        fn = flex_attention if mode == "compile" else torch.compile(flex_attention, dynamic=False)
        return lambda q, k, v: fn(q, k, v, block_mask=block_mask)
    mask = swa_bool_mask(T, W, S, device)
    if hasattr(F, "scaled_dot_product_attention"):
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return lambda q, k, v: explicit_attention(q, k, v, mask, 1.0 / math.sqrt(d))


def flops_per_token(model, c, n_params):
    T, H = c["T"], c["H"]
    attn = 0.0
    for k in model.kinds:
        if k == "swa":
            d = c["D"] // H
            attn += 6 * min(T / 2, c["W"] + c["S"]) * H * (d + d)
        else:
            attn += 6 * (T / 2) * H * (c["dn"] + c["dr"] + c["dv"])
    return 6 * n_params + attn


def main():
    ap = argparse.ArgumentParser(description="PyTorch SWA-MLA training-step benchmark")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="swamla_small")
    ap.add_argument("--batch", type=int, default=0, help="micro-batch (default: the preset's)")
    ap.add_argument("--seq", type=int, default=0, help="sequence length (default: the preset's)")
    ap.add_argument("--mode", choices=("eager", "compile"), default="eager")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, …)")
    ap.add_argument("--swa", choices=("flex", "mask"), default="", help="SWA attention (default flex on CUDA)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--peak-flops", type=float, default=989e12, help="peak dense bf16 FLOP/s for MFU")
    a = ap.parse_args()
    c = dict(PRESETS[a.preset])
    if a.batch:
        c["B"] = a.batch
    if a.seq:
        c["T"] = a.seq
    if c["B"] < 1 or c["T"] < 1 or a.steps < 1 or a.warmup < 0:
        die("--batch, --seq and --steps must be ≥ 1 and --warmup ≥ 0")
    dev = C.setup_device("torch_decoder", a.device, a.mode)
    cuda = dev.type == "cuda"
    swa_impl = a.swa or ("flex" if cuda else "mask")
    B, T, V = c["B"], c["T"], c["V"]
    Vp = (V + 127) // 128 * 128

    torch.manual_seed(1337)
    model = SWAMLA(c, Vp, make_swa_attention(c, swa_impl, a.mode, dev)).to(dev)
    n_params = sum(p.numel() for p in model.parameters())  # the tied weight once
    opt = C.adamw(model, lambda n, p: p.dim() == 2 and not n.startswith("wte."))
    step_model = torch.compile(model, mode=a.compile_mode) if a.mode == "compile" else model
    times, loss = C.time_training(model, step_model, opt, C.random_batches(V, B, T, dev), a.warmup, a.steps, dev)
    fpt = flops_per_token(model, c, n_params)
    print(f"torch {torch.__version__} on {C.device_name(dev)}: {a.preset} L={c['L']} D={c['D']} H={c['H']} F={c['F']} "
          f"layers {''.join('S' if k == 'swa' else 'M' for k in model.kinds)} W={c['W']} S={c['S']} "
          f"MLA r={c['r']} nope={c['dn']} rope={c['dr']} v={c['dv']} V={V} Vp={Vp} N={n_params} B={B} T={T} "
          f"mode={a.mode}{'/' + a.compile_mode if a.mode == 'compile' else ''} swa={swa_impl} fused_adamw={cuda}")
    C.report_training(times, loss, B * T, fpt, a.peak_flops, dev)


if __name__ == "__main__":
    main()
