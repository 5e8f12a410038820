#!/usr/bin/env python3
"""floors.py — the least time one training step of a generated program can take on a GPU, op kind by op kind,
read off its model.plan (no GPU, no PyTorch):

    python3 bench/floors.py out/model.plan [--mm-tflops 783] [--attn-tflops 500] [--gbps 4280] [--step-ms 65.8]

Each op's floor is the larger of its arithmetic over a rate and its bytes over the memory bandwidth:
  - matmul: 2·M·N·K FLOPs at --mm-tflops (default: the bf16 GEMM ceiling measured on the lent H200,
    shared/notes/anchors.md), bytes A + B + C;
  - attn, attn_bwd_dkdv, attn_bwd_dq (and GPT-2's attention*): the visible (query, key) pairs of the mask (causal, window + sinks) times
    2·(DQK + DV) forward and 2·(3·DQK + 2·DV) backward — the five products of a fused backward, split
    (2·DQK + 2·DV) dK/dV, DQK dQ — at --attn-tflops (default 500: FlashAttention-3's published H100 rates
    for head dim 128, forward 500-600, backward 400-500), bytes of their refs;
  - every other op: the bytes of its refs at --gbps (default: the device-to-device copy measured there).
Bytes count each distinct ref of an op once at its full size (a packed qkv read by an attention kernel counts
whole), twice for an output it also reads (AdamW's master, m, v; the in-place cross-entropy gradient; an
accumulating product; acc = 1): close to the least the op must move, not what it moves. With --step-ms
(a measured step) the table also says how far the step is from the sum of the floors.
"""
import argparse
import sys

DT = {"bf16": 2, "f32": 4, "i32": 4}


def die(msg):
    sys.exit("floors.py: " + msg)


def load(path):
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        die(f"{path}: {e.strerror}")
    if not lines or not lines[0].startswith("moonforge-plan"):
        die(f"{path}:1: not a moonforge plan (first line: {lines[0] if lines else 'empty'!r})")
    p = {"dim": {}, "params": {}, "buffers": {}, "inputs": {}, "arena": 0, "ops": []}
    for no, line in enumerate(lines, 1):
        f = line.split(" # ")[0].split()
        if not f or f[0].startswith("#"):
            continue
        try:
            if f[0] == "dim":
                p["dim"][f[1]] = int(f[2])
            elif f[0] == "param":
                p["params"][int(f[1])] = int(f[3])
            elif f[0] == "arena" and f[1] == "params":
                p["arena"] = int(f[2])
            elif f[0] == "buffer":
                p["buffers"][int(f[1])] = int(f[4]) * DT[f[3]]
            elif f[0] == "input":
                p["inputs"][f[1]] = int(f[3]) * DT.get(f[2], 4)
            elif f[0] == "op":
                nref = int(f[12])   # op idx phase kind kernel gx gy gz bx by bz smem nrefs refs… nattrs attrs…
                refs = [(r.lstrip(">").split("=", 1)[0], r.lstrip(">").split("=", 1)[1], r.startswith(">"))
                        for r in f[13:13 + nref]]
                nat = int(f[13 + nref])
                attrs = dict(kv.split("=", 1) for kv in f[14 + nref:14 + nref + nat])
                p["ops"].append({"phase": f[2], "kind": f[3], "refs": refs, "attrs": attrs})
        except (IndexError, ValueError, KeyError) as e:
            die(f"{path}:{no}: cannot read this line ({e}): {line[:120]}")
    return p


def ref_bytes(p, r):
    kind, _, idx = r.partition(":")
    if kind == "act":
        return p["buffers"][int(idx)]
    if kind == "param":
        return 2 * p["params"][int(idx)]
    if kind == "grad":
        return 4 * p["params"][int(idx)]
    if kind == "params":
        return 2 * p["arena"]
    if kind in ("master", "grads", "adam_m", "adam_v"):
        return 4 * p["arena"]
    if kind in p["inputs"]:
        return p["inputs"][kind]
    return 0   # scal, loss, partials: a few bytes


def read_too(op, role):
    """An output the op also reads: AdamW's state, the in-place cross-entropy gradient, an accumulating
    product (beta ≠ 0) or an op with attr acc = 1."""
    k, at = op["kind"], op["attrs"]
    return ((k == "adamw" and role in ("master", "m", "v")) or (k == "xent" and role == "logits") or
            (k == "matmul" and float(at.get("beta", 0)) != 0) or at.get("acc", "0") not in ("0", "0.0"))


def op_bytes(p, op):
    """each distinct buffer once, plus once more for an output that is read as well (read_too)"""
    seen, n = set(), 0
    for role, ref, out in op["refs"]:
        if ref in seen:
            continue
        seen.add(ref)
        b = ref_bytes(p, ref)
        n += 2 * b if out and read_too(op, role) else b
    return n


def pairs(T, W, S):
    """visible (query, key) pairs of one head: Σ_i |{j ≤ i : W = 0 or i − j < W or j < S}|"""
    n = 0
    for i in range(T):
        win = i + 1 if (W == 0 or W > i + 1) else W
        sink = 0 if (W == 0 or i + 1 <= W) else min(S, i - W + 1)
        n += win + sink
    return n


# the attention kernels: attn_* (attention_gen.cuh) and GPT-2's attention* (attention.cuh: causal, DQK = DV = d)
ATTN = {"attn": "fwd", "attn_bwd_dkdv": "dkdv", "attn_bwd_dq": "dq",
        "attention": "fwd", "attention_bwd_dkdv": "dkdv", "attention_bwd_dq": "dq"}


def attn_flops(op):
    at = {k: int(float(v)) for k, v in op["attrs"].items()}
    dqk, dv = (at["d"], at["d"]) if "d" in at else (at["DQK"], at["DV"])
    pr = at["B"] * at["H"] * pairs(at["T"], at.get("WINDOW", 0), at.get("SINK", 0))
    return {"fwd": 2 * pr * (dqk + dv), "dkdv": 2 * pr * (2 * dqk + 2 * dv), "dq": 2 * pr * dqk}[ATTN[op["kind"]]]


def main():
    ap = argparse.ArgumentParser(description="per-kind time floors of one training step, from model.plan")
    ap.add_argument("plan")
    ap.add_argument("--mm-tflops", type=float, default=783.0, help="matmul rate (default: measured bf16 GEMM ceiling)")
    ap.add_argument("--attn-tflops", type=float, default=500.0, help="attention rate (default: FlashAttention-3 class)")
    ap.add_argument("--gbps", type=float, default=4280.0, help="memory bandwidth, GB/s (default: measured copy)")
    ap.add_argument("--step-ms", type=float, default=0.0, help="a measured step, to compare against")
    a = ap.parse_args()
    if a.mm_tflops <= 0 or a.attn_tflops <= 0 or a.gbps <= 0:
        die("--mm-tflops, --attn-tflops and --gbps must be positive")
    p = load(a.plan)
    rows = {}
    for op in p["ops"]:
        if op["phase"] not in ("fwd", "bwd", "opt"):
            continue
        k = op["kind"]
        byts = op_bytes(p, op)
        flops, rate = 0.0, 0.0
        if k == "matmul":
            at = op["attrs"]
            flops, rate = 2.0 * float(at["M"]) * float(at["N"]) * float(at["K"]), a.mm_tflops
        elif k in ATTN:
            flops, rate = float(attn_flops(op)), a.attn_tflops
        floor = max(flops / (rate * 1e9) if rate else 0.0, byts / (a.gbps * 1e6))
        r = rows.setdefault((op["phase"], k), [0, 0.0, 0.0, 0.0])
        r[0] += 1
        r[1] += flops
        r[2] += byts
        r[3] += floor
    accum = p["dim"].get("accum", 1)
    total = 0.0
    print(f"{a.plan}: floors of one step (accum {accum}); matmul {a.mm_tflops:g} TFLOP/s, attention "
          f"{a.attn_tflops:g} TFLOP/s, memory {a.gbps:g} GB/s")
    print("| phase kind | ops | GFLOP | GB | floor ms |\n| --- | --- | --- | --- | --- |")
    for (ph, k), (n, fl, by, ms) in sorted(rows.items(), key=lambda kv: -kv[1][3]):
        m = 1 if ph == "opt" else accum
        total += ms * m
        print(f"| {ph} {k} | {n} | {fl * m / 1e9:.1f} | {by * m / 1e9:.2f} | {ms * m:.3f} |")
    print(f"sum of the floors: {total:.2f} ms per step", end="")
    if a.step_ms > 0:
        print(f"; the measured {a.step_ms:g} ms is {a.step_ms / total:.2f}x it")
    else:
        print()


if __name__ == "__main__":
    main()
