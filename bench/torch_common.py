"""What the PyTorch baselines share: the device set-up, the optimizer, the timed training loop and its
report, and the RMSNorm / RoPE pieces (bench/torch_gpt2.py, torch_decoder.py, torch_parscale.py).

The training step every baseline times is the one a strong PyTorch user writes: fp32 master weights with
bf16 autocast, zero_grad(set_to_none), forward + loss, backward, clip_grad_norm_(1.0), torch.optim.AdamW
(fused on CUDA) with weight decay on the matmul weights only, warmup + cosine lr — each step timed with
torch.cuda.synchronize + perf_counter, the median over the timed steps reported. The LAST line printed is

    BENCH tok_per_s=<float> ms_per_step=<float> mfu=<float>
"""
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def die(prog, msg):
    print(f"{prog}: {msg}", file=sys.stderr)
    sys.exit(1)


def setup_device(prog, device, mode):
    """The torch.device, after refusing what this torch cannot do; TF32 on for the fp32 leftovers."""
    if device == "cuda" and not torch.cuda.is_available():
        die(prog, "--device cuda: no CUDA device visible to torch")
    if mode == "compile" and not hasattr(torch, "compile"):
        die(prog, f"--mode compile: torch {torch.__version__} has no torch.compile")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(device)


def device_name(dev):
    return torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"


def adamw(model, decayed, lr=6e-4):
    """AdamW(β 0.9/0.95, eps 1e-8), weight decay 0.1 on the parameters whose name `decayed(name, p)` accepts."""
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if decayed(n, p)], "weight_decay": 0.1},
              {"params": [p for n, p in named if not decayed(n, p)], "weight_decay": 0.0}]
    kw = dict(lr=lr, betas=(0.9, 0.95), eps=1e-8)
    if next(model.parameters()).is_cuda:
        kw["fused"] = True
    return torch.optim.AdamW(groups, **kw)


def lr_at(s, lr=6e-4, min_lr=6e-5, warmup=5, total=1000):
    if s < warmup:
        return lr * (s + 1) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))


def random_batches(V, B, T, dev, n=4):
    """A few batches of random tokens, resident on the device: no input pipeline in the timing."""
    g = torch.Generator(device="cpu").manual_seed(0)
    return [(torch.randint(0, V, (B, T), generator=g).to(dev), torch.randint(0, V, (B, T), generator=g).to(dev))
            for _ in range(n)]


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_training(model, step_model, opt, data, warmup, steps, dev):
    """Run warmup + steps training steps of step_model(idx, tgt) -> loss; the timed steps' seconds and the
    last loss."""
    params = list(model.parameters())
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    times, loss = [], None
    for s in range(warmup + steps):
        idx, tgt = data[s % len(data)]
        sync(dev)
        t0 = time.perf_counter()
        for grp in opt.param_groups:
            grp["lr"] = lr_at(s)
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = step_model(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sync(dev)
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    return times, float(loss)


def report_training(times, loss, tokens_per_step, flops_per_token, peak_flops, dev, extra=""):
    """The summary lines and the BENCH line (last)."""
    if not math.isfinite(loss):
        print(f"loss is {loss}", file=sys.stderr)
        sys.exit(1)
    med = statistics.median(times)
    tok_s = tokens_per_step / med
    print(f"steps {len(times)} timed: median {med * 1e3:.2f} ms, min {min(times) * 1e3:.2f} ms, "
          f"max {max(times) * 1e3:.2f} ms; last loss {loss:.4f}; {flops_per_token / 1e9:.3f} GFLOP/token{extra}")
    if dev.type == "cuda":
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"BENCH tok_per_s={tok_s:.1f} ms_per_step={med * 1e3:.3f} mfu={flops_per_token * tok_s / peak_flops:.4f}",
          flush=True)


def rms_norm(x, w, eps=1e-6):
    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype) * w


class RMSNorm(nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rope_tables(T, dim, base=10000.0):
    """cos, sin [T, dim/2] of angle t·base^(−2i/dim)."""
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :]
    return ang.cos().float(), ang.sin().float()


def rope_half(x, cos, sin):
    """x [..., T, d] rotated in pairs (i, i + d/2) — GPT-NeoX / Llama / Qwen2 layout."""
    a, b = x.chunk(2, dim=-1)
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((a * c - b * s, b * c + a * s), dim=-1)
