#!/usr/bin/env python3
"""PyTorch baseline for the GPT-2 124M training benchmark (what moonforge is compared against).

    python3 bench/torch_gpt2.py --batch 16 --seq 1024 --mode eager|compile --steps 20 --warmup 5

GPT-2 124M (L=12, D=768, H=12, V=50257 padded to 50304, tied head, GELU-tanh, LayerNorm eps 1e-5) written the
way a strong PyTorch user writes it: fp32 master weights with bf16 autocast, F.scaled_dot_product_attention
(is_causal=True, so flash attention on Hopper), torch.optim.AdamW(fused=True) with weight decay only on the
matmul weights, clip_grad_norm_(1.0), warmup+cosine lr, random tokens resident on the GPU, optionally
torch.compile. As in nanoGPT/llm.c the cross-entropy runs over the padded vocabulary (the padded columns cost
the same matmul either way).

A step (zero_grad, forward+loss, backward, clip, AdamW) is timed with torch.cuda.synchronize + perf_counter;
the median over --steps after --warmup untimed steps is reported. The LAST line printed is exactly

    BENCH tok_per_s=<float> ms_per_step=<float> mfu=<float>

with MFU = (6·N + 6·L·T·D)·tok_per_s / peak (peak 989e12, H100/H200 dense bf16), N the parameter count with
the padded vocabulary (tied head counted once).

For a smoke test without a GPU: --device cpu --tiny (L=2, D=64, H=4, V=500 padded to 512; bf16 autocast on
the CPU, no fused AdamW, no compile; manual attention where torch lacks scaled_dot_product_attention).
"""
import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common as C


def die(msg):
    C.die("torch_gpt2", msg)


class Attention(nn.Module):
    def __init__(self, D, H):
        super().__init__()
        self.H = H
        self.c_attn = nn.Linear(D, 3 * D)
        self.c_proj = nn.Linear(D, D)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)
        q, k, v = (t.view(B, T, self.H, D // self.H).transpose(1, 2) for t in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # old torch (CPU smoke test only): the same math, written out
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D // self.H))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = s.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, D, H):
        super().__init__()
        self.ln_1 = nn.LayerNorm(D, eps=1e-5)
        self.attn = Attention(D, H)
        self.ln_2 = nn.LayerNorm(D, eps=1e-5)
        self.c_fc = nn.Linear(D, 4 * D)
        self.c_proj = nn.Linear(4 * D, D)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, L, D, H, T, Vp):
        super().__init__()
        self.wte = nn.Embedding(Vp, D)
        self.wpe = nn.Embedding(T, D)
        self.h = nn.ModuleList(Block(D, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(D, eps=1e-5)
        self.lm_head = nn.Linear(D, Vp, bias=False)
        self.lm_head.weight = self.wte.weight  # tied head
        self.register_buffer("pos", torch.arange(T), persistent=False)
        proj_std = 0.02 / math.sqrt(2 * L)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, proj_std if name.endswith("c_proj.weight") else 0.02)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(self.pos[: idx.shape[1]])
        for blk in self.h:
            x = blk(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1))


def main():
    ap = argparse.ArgumentParser(description="PyTorch GPT-2 124M training-step benchmark")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--mode", choices=("eager", "compile"), default="eager")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, …)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="L=2 D=64 H=4 V=500 (smoke test)")
    ap.add_argument("--peak-flops", type=float, default=989e12, help="peak dense bf16 FLOP/s for MFU")
    a = ap.parse_args()
    if a.batch < 1 or a.seq < 1 or a.steps < 1 or a.warmup < 0:
        die("--batch, --seq and --steps must be ≥ 1 and --warmup ≥ 0")

    L, D, H, V = (2, 64, 4, 500) if a.tiny else (12, 768, 12, 50257)
    Vp = (V + 127) // 128 * 128
    if a.tiny:
        Vp = 512  # the tiny spec's padding
    B, T = a.batch, a.seq
    dev = C.setup_device("torch_gpt2", a.device, a.mode)

    torch.manual_seed(1337)
    model = GPT2(L, D, H, T, Vp).to(dev)
    n_params = sum(p.numel() for p in model.parameters())  # parameters() yields the tied weight once
    opt = C.adamw(model, lambda n, p: p.dim() == 2 and not n.startswith(("wte.", "wpe.")))
    step_model = torch.compile(model, mode=a.compile_mode) if a.mode == "compile" else model
    times, loss = C.time_training(model, step_model, opt, C.random_batches(V, B, T, dev), a.warmup, a.steps, dev)
    print(f"torch {torch.__version__} on {C.device_name(dev)}: GPT-2 L={L} D={D} H={H} V={V} Vp={Vp} N={n_params} "
          f"B={B} T={T} mode={a.mode}{'/' + a.compile_mode if a.mode == 'compile' else ''} "
          f"fused_adamw={dev.type == 'cuda'}")
    C.report_training(times, loss, B * T, 6 * n_params + 6 * L * T * D, a.peak_flops, dev)

if __name__ == "__main__":
    main()
