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
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def die(msg):
    print(f"torch_gpt2: {msg}", file=sys.stderr)
    sys.exit(1)


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


def lr_at(s, lr=6e-4, min_lr=6e-5, warmup=5, total=1000):
    if s < warmup:
        return lr * (s + 1) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))


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
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        die("--device cuda: no CUDA device visible to torch")
    if a.mode == "compile" and not hasattr(torch, "compile"):
        die(f"--mode compile: torch {torch.__version__} has no torch.compile")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dev = torch.device(a.device)

    torch.manual_seed(1337)
    model = GPT2(L, D, H, T, Vp).to(dev)
    n_params = sum(p.numel() for p in model.parameters())  # parameters() yields the tied weight once
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith(("wte.", "wpe."))]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith(("wte.", "wpe.")))]
    opt_kw = dict(lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    if cuda:
        opt_kw["fused"] = True
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], **opt_kw)
    step_model = torch.compile(model, mode=a.compile_mode) if a.mode == "compile" else model

    # a few batches of random tokens, resident on the device: no input pipeline in the timing
    g = torch.Generator(device="cpu").manual_seed(0)
    data = [(torch.randint(0, V, (B, T), generator=g).to(dev), torch.randint(0, V, (B, T), generator=g).to(dev))
            for _ in range(4)]
    params = list(model.parameters())
    amp = torch.autocast(device_type=a.device, dtype=torch.bfloat16)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    times, loss = [], None
    for s in range(a.warmup + a.steps):
        idx, tgt = data[s % len(data)]
        sync()
        t0 = time.perf_counter()
        for grp in opt.param_groups:
            grp["lr"] = lr_at(s)
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = step_model(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sync()
        dt = time.perf_counter() - t0
        if s >= a.warmup:
            times.append(dt)

    med = statistics.median(times)
    tok_s = B * T / med
    flops_per_tok = 6 * n_params + 6 * L * T * D
    mfu = flops_per_tok * tok_s / a.peak_flops
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"torch {torch.__version__} on {name}: GPT-2 L={L} D={D} H={H} V={V} Vp={Vp} N={n_params} "
          f"B={B} T={T} mode={a.mode}{'/' + a.compile_mode if a.mode == 'compile' else ''} "
          f"fused_adamw={cuda}")
    print(f"steps {a.steps} after {a.warmup} warmup: median {med * 1e3:.2f} ms, min {min(times) * 1e3:.2f} ms, "
          f"max {max(times) * 1e3:.2f} ms; last loss {float(loss):.4f}")
    if cuda:
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"BENCH tok_per_s={tok_s:.1f} ms_per_step={med * 1e3:.3f} mfu={mfu:.4f}", flush=True)


if __name__ == "__main__":
    main()
