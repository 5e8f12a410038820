#!/usr/bin/env python3
"""Independent PyTorch reference for the GPT-2 family: writes the golden file moonforge is tested against.

    /usr/bin/python3 tests/reference/gpt2_ref.py out/config.json tests/golden/gpt2_tiny.safetensors \
        [--steps 10] [--seed 1234] [--device cpu|cuda] [--hf]

The model is written from the math in docs/ir.md, not from moonforge's code:

    x = wte[tok] + wpe[pos]
    per layer:  x = x + c_proj(attn(c_attn(ln_1(x))));  x = x + mlp_c_proj(gelu(c_fc(ln_2(x))))
    logits = ln_f(x) · wteᵀ  over the padded vocabulary Vp; only the first V columns enter the softmax
    loss = mean over all tokens of  logsumexp(logits[0:V]) − logits[target]

in float64. Initial weights are drawn with torch's generator from --seed (following each param's init/std in
config.json, wte rows ≥ V zeroed) and rounded to float32, so the stored `init.*` are exactly the weights the
reference computes with. The optimizer is AdamW written out by hand exactly as docs/ir.md's `adamw` op, and is
checked once against torch.optim.AdamW + clip_grad_norm_.

Golden file (safetensors, keys sorted):
    init.<name> f32, grad.<name> f32 (gradient of the step-0 loss at init), tokens/targets i32 [S, A·B, T],
    logits f32 [A·B, T, V] and loss f32 [1] (step 0, at init), losses f32 [S] (loss of each step before its update)
with A = train.grad_accum (the A micro-batches of a step are consecutive along dim 1; the loss is the mean over
all A·B·T tokens, which is what accumulating micro-steps with scale 1/(A·B·T) computes).

Also a module: read_safetensors / write_safetensors are importable from tests.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

DTYPE = torch.float64

# safetensors dtype names <-> torch dtypes (little-endian numpy codes for the raw bytes)
_ST_DTYPES = {
    "F64": (torch.float64, "<f8"),
    "F32": (torch.float32, "<f4"),
    "I64": (torch.int64, "<i8"),
    "I32": (torch.int32, "<i4"),
}
_TORCH_TO_ST = {v[0]: k for k, v in _ST_DTYPES.items()}


def die(msg):
    print(f"gpt2_ref: {msg}", file=sys.stderr)
    sys.exit(1)


# ----------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header {name: {dtype, shape, data_offsets}},
# then the raw little-endian data; offsets are relative to the end of the header.

def write_safetensors(path, tensors, metadata):
    """Write tensors (name -> torch.Tensor) with string metadata; keys sorted, data contiguous, atomic."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _TORCH_TO_ST:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {t.dtype}")
        st = _TORCH_TO_ST[t.dtype]
        data = t.numpy().astype(_ST_DTYPES[st][1], copy=False).tobytes()
        header[name] = {"dtype": st, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # pad so the data starts 8-byte aligned (spaces are valid JSON)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hjson)))
            f.write(hjson)
            for b in blobs:
                f.write(b)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_safetensors(path):
    """Return (tensors name -> torch.Tensor, metadata dict); raises ValueError naming the file on bad input."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen > len(raw) - 8:
        raise ValueError(f"{path}: header length {hlen} exceeds the file")
    try:
        header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: bad JSON header: {e}")
    meta = header.pop("__metadata__", {}) or {}
    data = raw[8 + hlen:]
    out, spans = {}, []
    for name, info in header.items():
        st = info.get("dtype")
        if st not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {st}")
        tdt, npdt = _ST_DTYPES[st]
        shape = [int(s) for s in info["shape"]]
        a, b = (int(x) for x in info["data_offsets"])
        n = int(np.prod(shape)) if shape else 1
        if not (0 <= a <= b <= len(data)) or b - a != n * np.dtype(npdt).itemsize:
            raise ValueError(f"{path}: tensor {name}: data_offsets {a},{b} do not fit shape {shape} {st}")
        arr = np.frombuffer(data, dtype=npdt, count=n, offset=a).reshape(shape)
        out[name] = torch.from_numpy(arr.astype(npdt[1:], copy=True))
        spans.append((a, b, name))
    spans.sort()
    pos = 0
    for a, b, name in spans:
        if a != pos:
            raise ValueError(f"{path}: tensor {name}: data not contiguous (starts at {a}, expected {pos})")
        pos = b
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes after the last tensor")
    return out, meta


# ----------------------------------------------------------------------------------------------
# config.json

def load_config(path):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        die(f"{path}: cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        die(f"{path}: bad JSON: {e}")

    def need(sec, key, kind):
        if not isinstance(cfg.get(sec), dict) or key not in cfg[sec]:
            die(f"{path}: missing field {sec}.{key}")
        v = cfg[sec][key]
        if kind is int and not (isinstance(v, int) and not isinstance(v, bool)):
            die(f"{path}: field {sec}.{key} must be an integer, got {v!r}")
        if kind is float and not (isinstance(v, (int, float)) and not isinstance(v, bool)):
            die(f"{path}: field {sec}.{key} must be a number, got {v!r}")
        return kind(v)

    m = {k: need("model", k, int) for k in ("n_layer", "d_model", "n_head", "seq_len", "vocab_size", "vocab_padded")}
    m["ln_eps"] = need("model", "ln_eps", float)
    tr = {k: need("train", k, int) for k in ("batch_size", "grad_accum", "warmup_steps", "steps")}
    for k in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "eps", "grad_clip"):
        tr[k] = need("train", k, float)
    if cfg.get("family", "gpt2") != "gpt2":
        die(f"{path}: family {cfg.get('family')!r} is not gpt2")
    if m["d_model"] % m["n_head"]:
        die(f"{path}: model.d_model {m['d_model']} not divisible by model.n_head {m['n_head']}")
    if m["vocab_padded"] < m["vocab_size"]:
        die(f"{path}: model.vocab_padded {m['vocab_padded']} < model.vocab_size {m['vocab_size']}")
    for k in ("batch_size", "grad_accum", "steps"):
        if tr[k] < 1:
            die(f"{path}: train.{k} must be ≥ 1, got {tr[k]}")
    params = cfg.get("params")
    if not isinstance(params, list) or not params:
        die(f"{path}: missing field params")
    for i, p in enumerate(params):
        for k in ("name", "shape", "decay", "init"):
            if not isinstance(p, dict) or k not in p:
                die(f"{path}: params[{i}]: missing field {k}")
        if p["init"] not in ("normal", "zeros", "ones"):
            die(f"{path}: params[{i}] ({p['name']}): unknown init {p['init']!r}")
        if p["init"] == "normal" and not isinstance(p.get("std"), (int, float)):
            die(f"{path}: params[{i}] ({p['name']}): init normal needs a numeric std")
    check_params_against_ir(path, m, params)
    return cfg, m, tr, params


def expected_params(m):
    """The GPT-2 parameter table of docs/ir.md: name -> (shape, init, std, decay)."""
    L, D, T, Vp = m["n_layer"], m["d_model"], m["seq_len"], m["vocab_padded"]
    proj_std = 0.02 / math.sqrt(2 * L)
    e = {"wte.weight": ([Vp, D], "normal", 0.02, False), "wpe.weight": ([T, D], "normal", 0.02, False)}
    for l in range(L):
        h = f"h.{l}."
        for ln in ("ln_1", "ln_2"):
            e[h + ln + ".weight"] = ([D], "ones", 0.0, False)
            e[h + ln + ".bias"] = ([D], "zeros", 0.0, False)
        for lin, (o, i, std) in {"attn.c_attn": (3 * D, D, 0.02), "attn.c_proj": (D, D, proj_std),
                                 "mlp.c_fc": (4 * D, D, 0.02), "mlp.c_proj": (D, 4 * D, proj_std)}.items():
            e[h + lin + ".weight"] = ([o, i], "normal", std, True)
            e[h + lin + ".bias"] = ([o], "zeros", 0.0, False)
    e["ln_f.weight"] = ([D], "ones", 0.0, False)
    e["ln_f.bias"] = ([D], "zeros", 0.0, False)
    return e


def check_params_against_ir(path, m, params):
    """The generator's parameter list must be exactly docs/ir.md's table (an independent check of gen)."""
    exp = expected_params(m)
    seen = set()
    for p in params:
        n = p["name"]
        if n not in exp:
            die(f"{path}: param {n}: not a GPT-2 parameter of docs/ir.md")
        if n in seen:
            die(f"{path}: param {n}: listed twice")
        seen.add(n)
        shape, init, std, decay = exp[n]
        if list(p["shape"]) != shape:
            die(f"{path}: param {n}: shape {p['shape']} != {shape}")
        if p["init"] != init:
            die(f"{path}: param {n}: init {p['init']} != {init}")
        if init == "normal" and abs(float(p["std"]) - std) > 1e-9 * std:
            die(f"{path}: param {n}: std {p['std']} != {std}")
        if bool(p["decay"]) != decay:
            die(f"{path}: param {n}: decay {p['decay']} != {decay}")
    missing = [n for n in exp if n not in seen]
    if missing:
        die(f"{path}: params: missing {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")


# ----------------------------------------------------------------------------------------------
# initial weights and data, from one torch generator (CPU, so every device gets the same draws)

def init_weights(params, V, seed):
    g = torch.Generator().manual_seed(seed)
    w = {}
    for p in params:  # config order; each normal param consumes numel draws
        shape = list(p["shape"])
        if p["init"] == "normal":
            t = torch.randn(shape, generator=g, dtype=DTYPE) * float(p["std"])
        elif p["init"] == "zeros":
            t = torch.zeros(shape, dtype=DTYPE)
        else:
            t = torch.ones(shape, dtype=DTYPE)
        if p["name"] == "wte.weight":
            t[V:] = 0.0  # padded vocabulary rows are zero
        w[p["name"]] = t.float().double()  # round to f32: the golden init is what we compute with
    return w, g


def make_data(g, S, rows, T, V):
    tokens = torch.randint(0, V, (S, rows, T), generator=g, dtype=torch.int64).to(torch.int32)
    targets = torch.randint(0, V, (S, rows, T), generator=g, dtype=torch.int64).to(torch.int32)
    return tokens, targets


# ----------------------------------------------------------------------------------------------
# the model, from the math

def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance, as in ir.md
    return (x - mu) * torch.rsqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def linear(x, w, b):
    return x @ w.t() + b  # w is [out, in]


def causal_attention(qkv, H):
    B, T, D3 = qkv.shape
    D = D3 // 3
    d = D // H
    q, k, v = qkv.split(D, dim=-1)  # [q | k | v], head h owns columns h·d … h·d+d−1 of each
    q, k, v = (t.reshape(B, T, H, d).transpose(1, 2) for t in (q, k, v))  # [B, H, T, d]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    mask = torch.ones(T, T, dtype=torch.bool, device=qkv.device).tril()
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return (p @ v).transpose(1, 2).reshape(B, T, D)


def forward(W, tokens, m):
    """tokens [B, T] int -> logits [B, T, Vp]."""
    B, T = tokens.shape
    eps, H = m["ln_eps"], m["n_head"]
    x = W["wte.weight"][tokens.long()] + W["wpe.weight"][:T]
    for l in range(m["n_layer"]):
        h = f"h.{l}."
        a = layernorm(x, W[h + "ln_1.weight"], W[h + "ln_1.bias"], eps)
        a = causal_attention(linear(a, W[h + "attn.c_attn.weight"], W[h + "attn.c_attn.bias"]), H)
        x = x + linear(a, W[h + "attn.c_proj.weight"], W[h + "attn.c_proj.bias"])
        f = layernorm(x, W[h + "ln_2.weight"], W[h + "ln_2.bias"], eps)
        f = gelu_tanh(linear(f, W[h + "mlp.c_fc.weight"], W[h + "mlp.c_fc.bias"]))
        x = x + linear(f, W[h + "mlp.c_proj.weight"], W[h + "mlp.c_proj.bias"])
    x = layernorm(x, W["ln_f.weight"], W["ln_f.bias"], eps)
    return x @ W["wte.weight"].t()  # tied head over the padded vocabulary


def xent_mean(logits, targets, V):
    """Mean over all tokens of logsumexp(logits[:V]) − logits[t]; columns ≥ V never enter the softmax."""
    real = logits[..., :V]
    losses = torch.logsumexp(real, dim=-1) - real.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return losses.mean()


def loss_and_grads(W, tokens, targets, m):
    """W: name -> leaf tensor with requires_grad. Returns (loss, logits [B,T,Vp]); grads land in .grad."""
    for t in W.values():
        t.grad = None
    logits = forward(W, tokens, m)
    loss = xent_mean(logits, targets, m["vocab_size"])
    loss.backward()
    return loss.detach(), logits.detach()


# ----------------------------------------------------------------------------------------------
# AdamW, by hand, exactly docs/ir.md's adamw op

def lr_at(s, tr):
    """Learning rate of 0-based step s: linear warmup, then cosine to min_lr over the remaining steps."""
    lr, lo, wu, n = tr["lr"], tr["min_lr"], tr["warmup_steps"], tr["steps"]
    if s < wu:
        return lr * (s + 1) / wu
    return lo + 0.5 * (lr - lo) * (1.0 + math.cos(math.pi * (s - wu) / max(1, n - wu)))


def adamw_step(W, state, decay, s, tr):
    """One update of every parameter from its .grad; state: name -> (m, v); s is the 0-based step."""
    b1, b2, eps, wd, clip = tr["beta1"], tr["beta2"], tr["eps"], tr["weight_decay"], tr["grad_clip"]
    lr = lr_at(s, tr)
    t = s + 1
    bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in W.values()))  # global norm of all grads
    c = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
    with torch.no_grad():
        for name, p in W.items():
            g = c * p.grad
            m, v = state[name]
            m.mul_(b1).add_((1.0 - b1) * g)
            v.mul_(b2).add_((1.0 - b2) * g * g)
            wd_i = wd if decay[name] else 0.0
            p.sub_(lr * (wd_i * p + (m / bc1) / (torch.sqrt(v / bc2) + eps)))


def leaves(W0, device):
    return {n: t.detach().clone().to(device).requires_grad_(True) for n, t in W0.items()}


def train_manual(W0, decay, tokens, targets, m, tr, nsteps, device):
    W = leaves(W0, device)
    state = {n: (torch.zeros_like(t), torch.zeros_like(t)) for n, t in W.items()}
    losses = []
    for s in range(nsteps):
        loss, _ = loss_and_grads(W, tokens[s].to(device), targets[s].to(device), m)
        losses.append(float(loss))
        adamw_step(W, state, decay, s, tr)
    return W, losses


def train_torch_optim(W0, decay, tokens, targets, m, tr, nsteps, device):
    """The same training with torch.optim.AdamW + clip_grad_norm_ (for the self-check only)."""
    W = leaves(W0, device)
    groups = [{"params": [W[n] for n in W if decay[n]], "weight_decay": tr["weight_decay"]},
              {"params": [W[n] for n in W if not decay[n]], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]), eps=tr["eps"])
    for s in range(nsteps):
        opt.zero_grad(set_to_none=True)
        loss_and_grads(W, tokens[s].to(device), targets[s].to(device), m)
        if tr["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(list(W.values()), tr["grad_clip"])
        for grp in opt.param_groups:
            grp["lr"] = lr_at(s, tr)
        opt.step()
    return W


def self_check_adamw(W0, decay, tokens, targets, m, tr, device):
    n = min(2, tokens.shape[0])
    Wa, _ = train_manual(W0, decay, tokens, targets, m, tr, n, device)
    Wb = train_torch_optim(W0, decay, tokens, targets, m, tr, n, device)
    worst = max(float((Wa[k] - Wb[k]).abs().max()) for k in Wa)
    if not worst <= 1e-10:
        die(f"self-check failed: hand-written AdamW differs from torch.optim.AdamW after {n} steps by {worst:.3e}")
    return n, worst


# ----------------------------------------------------------------------------------------------
# Hugging Face cross-check: the same weights in transformers' GPT2LMHeadModel must give the same logits

def hf_check(W0, tokens0, ref_logits, m, device):
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as e:
        die(f"--hf: transformers is not importable: {e}")
    torch.use_deterministic_algorithms(False)  # forward-only check: HF may use ops without a deterministic kernel
    V, D = m["vocab_size"], m["d_model"]
    kw = dict(vocab_size=V, n_positions=m["seq_len"], n_embd=D, n_layer=m["n_layer"], n_head=m["n_head"],
              n_inner=4 * D, activation_function="gelu_new", layer_norm_epsilon=m["ln_eps"],
              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, use_cache=False)
    try:
        cfg = GPT2Config(attn_implementation="eager", **kw)
    except TypeError:
        cfg = GPT2Config(**kw)
    model = GPT2LMHeadModel(cfg).to(device=device, dtype=DTYPE).eval()
    used = set()
    with torch.no_grad():
        for hname, p in model.named_parameters():  # the tied lm_head appears once, as wte
            ours = hname[len("transformer."):] if hname.startswith("transformer.") else hname
            if ours == "lm_head.weight":  # only listed if transformers did not tie it: it is wte all the same
                ours = "wte.weight"
            if ours not in W0:
                die(f"--hf: GPT2LMHeadModel parameter {hname} has no counterpart in our parameters")
            t = W0[ours]
            if ours == "wte.weight":
                t = t[:V]  # HF's embedding has the real vocabulary only
            elif t.dim() == 2 and ours != "wpe.weight" and hname != "lm_head.weight":
                t = t.t()  # our Linear [out, in] -> HF Conv1D [in, out]
            if tuple(p.shape) != tuple(t.shape):
                die(f"--hf: {hname}: shape {tuple(p.shape)} vs ours {tuple(t.shape)}")
            p.copy_(t.to(device))
            used.add(ours)
        unused = sorted(set(W0) - used)
        if unused:
            die(f"--hf: our parameters not used by GPT2LMHeadModel: {', '.join(unused[:4])}")
        out = model(input_ids=tokens0.long().to(device)).logits
    ref = ref_logits[..., :V].to(out.device)
    rel = float((out - ref).norm() / ref.norm())
    if not rel <= 1e-6:
        die(f"--hf: GPT2LMHeadModel logits differ from the reference: relative L2 {rel:.3e} > 1e-6")
    import transformers
    return rel, transformers.__version__


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="GPT-2 PyTorch reference: writes the golden safetensors file.")
    ap.add_argument("config", help="config.json written by bin/gen")
    ap.add_argument("out", help="golden .safetensors to write")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps S (and data batches)")
    ap.add_argument("--seed", type=int, default=1234, help="torch generator seed for weights and data")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--hf", action="store_true", help="also check logits against transformers' GPT2LMHeadModel")
    a = ap.parse_args()
    if a.steps < 1:
        die(f"--steps must be ≥ 1, got {a.steps}")
    if a.device == "cuda":
        if not torch.cuda.is_available():
            die("--device cuda: no CUDA device visible to torch")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)

    cfg, m, tr, params = load_config(a.config)
    V, T = m["vocab_size"], m["seq_len"]
    rows = tr["batch_size"] * tr["grad_accum"]  # all micro-batches of a step
    decay = {p["name"]: bool(p["decay"]) for p in params}

    W0, g = init_weights(params, V, a.seed)
    tokens, targets = make_data(g, a.steps, rows, T, V)

    # step 0 at init: logits, loss, gradients
    W = leaves(W0, a.device)
    loss0, logits0 = loss_and_grads(W, tokens[0].to(a.device), targets[0].to(a.device), m)
    grads = {n: t.grad.detach().cpu() for n, t in W.items()}
    gnorm = math.sqrt(sum(float((t ** 2).sum()) for t in grads.values()))

    n_chk, worst = self_check_adamw(W0, decay, tokens, targets, m, tr, a.device)
    _, losses = train_manual(W0, decay, tokens, targets, m, tr, a.steps, a.device)
    if abs(losses[0] - float(loss0)) > 1e-12:
        die(f"internal: step-0 loss of the training run {losses[0]} != {float(loss0)}")

    hf = hf_check(W0, tokens[0], logits0, m, a.device) if a.hf else None

    out = {"tokens": tokens, "targets": targets,
           "logits": logits0[..., :V].cpu().float(), "loss": loss0.reshape(1).cpu().float(),
           "losses": torch.tensor(losses, dtype=DTYPE).float()}
    for n in W0:
        out["init." + n] = W0[n].float()
        out["grad." + n] = grads[n].float()
    meta = {"spec": cfg.get("spec", ""), "overrides": json.dumps(cfg.get("overrides", [])),
            "name": cfg.get("name", ""), "seed": str(a.seed), "steps": str(a.steps), "dtype": "float64",
            "device": a.device, "torch": torch.__version__}
    write_safetensors(a.out, out, meta)

    # self-test of the writer: read the file back, every tensor and the metadata must be identical
    back, bmeta = read_safetensors(a.out)
    if set(back) != set(out) or bmeta != meta:
        die(f"{a.out}: read-back has different names or metadata")
    for n, t in out.items():
        if back[n].dtype != t.dtype or not torch.equal(back[n], t.cpu()):
            die(f"{a.out}: read-back of {n} differs from what was written")

    nbytes = os.path.getsize(a.out)
    print(f"gpt2_ref: {cfg.get('name', '?')}  L={m['n_layer']} D={m['d_model']} H={m['n_head']} T={T} "
          f"V={V} Vp={m['vocab_padded']}  B={tr['batch_size']} accum={tr['grad_accum']}  "
          f"seed={a.seed} device={a.device} float64")
    print(f"  step-0 loss {float(loss0):.6f} (ln V = {math.log(V):.6f}), grad norm {gnorm:.6f}")
    print(f"  losses[{a.steps}]: " + " ".join(f"{x:.5f}" for x in losses))
    print(f"  AdamW self-check vs torch.optim.AdamW: {n_chk} steps, max |Δparam| = {worst:.2e} (≤ 1e-10) ok")
    if hf:
        print(f"  HF GPT2LMHeadModel (transformers {hf[1]}): logits relative L2 {hf[0]:.2e} (≤ 1e-6) ok")
    print(f"  wrote {a.out}: {len(out)} tensors ({len(W0)} init + {len(W0)} grad + tokens targets logits "
          f"loss losses), {nbytes} bytes; read back identical")


if __name__ == "__main__":
    main()
