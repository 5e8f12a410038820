#!/usr/bin/env python3
"""Independent PyTorch reference for moonforge's generalised decoder: writes the golden files.

    /usr/bin/python3 tests/reference/decoder_ref.py out/config.json tests/golden/NAME.safetensors \
        [--steps 10] [--seed 1234] [--device cpu|cuda] [--hf]

Written from the math in ../shared/notes/models.md and docs/ir_decoder.md (not from gen/ or runtime/), in
float64. It covers every variant gen/config.lua's schema allows; config.json's "model", "derived" and "params"
say which. The golden file format is the one of tests/reference/gpt2_ref.py (now a thin wrapper of this file):

    init.<name> f32, grad.<name> f32 (gradient of the step-0 loss at init; zeros for a frozen parameter),
    tokens/targets i32 [S, A·B, T], logits f32 [A·B, T, V] and loss f32 [1] (step 0, at init, in training mode,
    so with dropout), losses f32 [S] (the loss of each step before its update)

with A = train.grad_accum (micro-batch k of a step is rows k·B … k·B+B−1). The loss of a step is the mean over
its A micro-batches of each micro-batch's mean token loss, which is what accumulating micro-steps with scale
1/(A·B·T) computes. Initial weights come from torch's generator seeded with --seed (every `normal` parameter
draws numel values in config.json's params order, as gpt2_ref.py always did, so the GPT-2 goldens are
unchanged), rounded to f32; then the tokens and targets.

THE MODEL (pre-norm residual blocks; "norm" is model.norm, eps model.ln_eps):

    x = wte[tok] (+ wpe[t] for position learned or sinusoidal; sinusoidal wpe is a frozen table)
    per layer l:
        a = Attn_l(norm(x));  a = c_proj(a) (+ bias if proj_bias);  a = DROP_resid(a);  x = x + a
        f = norm(x);  h = c_fc(f) (+ bias if mlp_bias);  h = act(h) or act(gate)⊙up;  h = DROP_mlp(h)
        f = mlp.c_proj(h) (+ bias);  f = DROP_resid(f);  x = x + f
    logits = norm_f(x) · wteᵀ (tied) or · lm_headᵀ, over the padded vocabulary; only columns < V enter the loss

    norms: layernorm (x−μ)/√(σ²+eps)·w + b;  rmsnorm x/√(mean x² + eps)·w;  dyt w·tanh(α·x) + b (α one scalar)
    MLPs:  gelu (tanh form), relu, silu: c_proj(act(c_fc x));  geglu, swiglu: c_fc rows [gate (F); up (F)],
           c_proj(act(gate)⊙up) with act gelu-tanh / silu;  F = derived.mlp_hidden
    full / swa layers: c_attn rows [q (H·d); k (Hkv·d); v (Hkv·d)] (+ bias if attn_bias); query head h uses
           kv head ⌊h·Hkv/H⌋; s = q·k/√d (+ ALiBi −m_h·(i−j) if position = alibi; q, k rotated over all d dims
           if position = rope, model.rope_layout); mask j ≤ i, and for swa also (i − j < W or j < S)
    mla layers (models.md §3): q = q_proj x, or q_b_proj(RMSNorm(q_a_proj x)) (q_a_norm is always RMSNorm, eps
           mla.latent_eps); per head q = [q_n (dn); q_r (dr)]; c = kv_a_c x, k̃r = kv_a_r x; c ← latent norm
           (mla.latent_norm, eps mla.latent_eps); k_n = kv_b_k c, v = kv_b_v c (per head contiguous);
           k_r = RoPE(k̃r) shared by all heads; q_r, k_r rotated with mla.rope_layout and model.rope_base whatever
           model.position is; s = (q_n·k_n + q_r·k_r)/√(dn+dr), causal; ALiBi never applies to MLA layers
    RoPE: pair dims (i, i+dr/2) (half) or (2i, 2i+1) (adjacent), angle t·base^(−2i/dr), t = 0 … T−1:
           (a, b) → (a·cos − b·sin, b·cos + a·sin)
    ALiBi: m_h = 2^(−8h/H), h = 1 … H for H a power of two; otherwise the first 2^⌊log2 H⌋ of those plus every
           other slope of the 2·2^⌊log2 H⌋ sequence (Press et al.)
    sinusoidal: pe[t, 2i] = sin(t·ω_i), pe[t, 2i+1] = cos(t·ω_i), ω_i = 10000^(−2i/D)

DROPOUT (training forward; docs/ir_decoder.md's counter-based masks, bit for bit):
    keep(element i) = mf_uniform(seed, stream, ctr, i) ≥ p, kept values scaled by 1/(1−p), where
    seed = train.seed mod 2^24 (the runtime passes it through an f32 scalar), ctr = step·A + micro (0-based
    optimizer step, micro-step within it), and the placements and stream numbers are:
      - attention probabilities (model.dropout.attn), after the softmax, before ·v, on every attention layer
        (full, swa and mla); element i = ((b·H + h)·T + query)·T + key
      - the attention branch (model.dropout.resid): c_proj's output (bias included), before the residual add;
        element i = (b·T + t)·D + c
      - the MLP activation (model.dropout.mlp): act(c_fc x) or act(gate)⊙up, before mlp.c_proj; i = (b·T + t)·F + f
      - the MLP branch (model.dropout.resid): mlp.c_proj's output (bias included), before the residual add
    b is the row within the micro-batch. Streams are numbered 1, 2, 3, … in that order (layer 0 first, and within
    a layer: attention probabilities, attention branch, MLP activation, MLP branch), counting only the dropouts
    whose p > 0. No dropout on the embeddings.

The optimizer is AdamW written out by hand exactly as docs/ir.md's `adamw` op (checked once against
torch.optim.AdamW + clip_grad_norm_); frozen parameters get no gradient and never move.

--hf: also compare the step-0 logits (with dropout off) against transformers (tests/reference/hf_crosscheck.py
picks GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM or DeepseekV3ForCausalLM from the config).

Also a module: read_safetensors / write_safetensors, make_config (a config dict without bin/gen), Model.
"""
import argparse
import copy
import json
import math
import os
import struct
import sys

import numpy as np
import torch

DTYPE = torch.float64
PROG = "decoder_ref"

_ST_DTYPES = {
    "F64": (torch.float64, "<f8"),
    "F32": (torch.float32, "<f4"),
    "I64": (torch.int64, "<i8"),
    "I32": (torch.int32, "<i4"),
}
_TORCH_TO_ST = {v[0]: k for k, v in _ST_DTYPES.items()}


def die(msg):
    print(f"{PROG}: {msg}", file=sys.stderr)
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
# configuration: the model fields of gen/config.lua's schema, the derived sizes, the parameter table

# Defaults of gen/config.lua's schema and its families, for configs built here without bin/gen
# (hf_crosscheck.py, self-tests). A config.json from bin/gen carries every field itself.
MODEL_DEFAULTS = {
    "n_layer": 12, "d_model": 768, "n_head": 12, "n_kv_head": 0, "seq_len": 1024, "vocab_size": 50257,
    "ln_eps": 1e-5, "attention": "mha", "position": "learned", "rope_base": 10000.0, "rope_layout": "half",
    "mlp": "gelu", "mlp_hidden": 0, "norm": "layernorm", "dyt_alpha": 0.5, "attn_bias": True, "proj_bias": True,
    "mlp_bias": True, "tie_embeddings": True, "dropout": {"attn": 0.0, "resid": 0.0, "mlp": 0.0},
    "swa_layers_per_cycle": 0, "mla_layers_per_cycle": 0, "layer_pattern": [], "layer_overrides": {},
    "swa_window": 256, "swa_sink": 4,
    "mla": {"kv_lora_rank": 256, "q_lora_rank": 0, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
            "v_head_dim": 128, "latent_norm": "rmsnorm", "latent_eps": 1e-6, "rope_layout": "adjacent"},
}
FAMILY_DEFAULTS = {
    "gpt2": {},
    "swamla": {"norm": "rmsnorm", "mlp": "swiglu", "position": "rope", "attn_bias": False, "proj_bias": False,
               "mlp_bias": False, "swa_layers_per_cycle": 2, "mla_layers_per_cycle": 1, "ln_eps": 1e-6},
    "llama": {"norm": "rmsnorm", "mlp": "swiglu", "position": "rope", "attn_bias": False, "proj_bias": False,
              "mlp_bias": False, "tie_embeddings": False, "ln_eps": 1e-6},
}
TRAIN_DEFAULTS = {"batch_size": 2, "grad_accum": 1, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 3, "steps": 10,
                  "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0, "seed": 1337}


def _merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "layer_overrides":
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def derive(m):
    """derived.{head_dim, n_kv_head, mlp_hidden, vocab_padded, layers} from complete model fields (gen/config.lua)."""
    H, D = m["n_head"], m["d_model"]
    hkv = m["n_kv_head"]
    if m["attention"] == "mqa":
        hkv = 1
    elif hkv == 0:
        hkv = H
    overrides = {int(k): v for k, v in (m.get("layer_overrides") or {}).items()}
    pattern = m.get("layer_pattern") or []
    if isinstance(pattern, dict):  # an empty Lua table serialises as {}
        pattern = [pattern[k] for k in sorted(pattern, key=int)]
    s, c = m["swa_layers_per_cycle"], m["mla_layers_per_cycle"]
    layers = []
    for l in range(m["n_layer"]):
        kind = "mla" if m["attention"] == "mla" else "full"
        if pattern:
            kind = pattern[l % len(pattern)]
        elif s + c > 0:
            kind = "swa" if l % (s + c) < s else "mla"
        L = {"attention": kind, "window": m["swa_window"], "sink": m["swa_sink"],
             "kv_lora_rank": m["mla"]["kv_lora_rank"], "q_lora_rank": m["mla"]["q_lora_rank"]}
        L.update(overrides.get(l, {}))
        layers.append(L)
    return {"head_dim": D // H, "n_kv_head": hkv, "mlp_hidden": m["mlp_hidden"] or 4 * D,
            "vocab_padded": (m["vocab_size"] + 127) // 128 * 128, "layers": layers}


def expected_params(m, dv):
    """docs/ir_decoder.md's parameter table: name -> dict(shape, init, std, decay, frozen)."""
    L, D, T, H = m["n_layer"], m["d_model"], m["seq_len"], m["n_head"]
    Hkv, d, F, Vp = dv["n_kv_head"], dv["head_dim"], dv["mlp_hidden"], dv["vocab_padded"]
    proj_std = 0.02 / math.sqrt(2 * L)
    mla = m["mla"]
    dn, dr, dvh = mla["qk_nope_head_dim"], mla["qk_rope_head_dim"], mla["v_head_dim"]
    e = {}

    def P(name, shape, init, std=0.0, decay=False, frozen=False):
        e[name] = {"shape": list(shape), "init": init, "std": std, "decay": decay, "frozen": frozen}

    def norm(pfx):
        P(pfx + ".weight", [D], "ones")
        if m["norm"] in ("layernorm", "dyt"):
            P(pfx + ".bias", [D], "zeros")
        if m["norm"] == "dyt":
            P(pfx + ".alpha", [1], "fill", m["dyt_alpha"])

    P("wte.weight", [Vp, D], "normal", 0.02)
    if m["position"] == "learned":
        P("wpe.weight", [T, D], "normal", 0.02)
    elif m["position"] == "sinusoidal":
        P("wpe.weight", [T, D], "sinusoidal", frozen=True)
    for l, Ly in enumerate(dv["layers"]):
        h = f"h.{l}."
        norm(h + "ln_1")
        if Ly["attention"] == "mla":
            r, rq = Ly["kv_lora_rank"], Ly["q_lora_rank"]
            if rq == 0:
                P(h + "attn.q_proj.weight", [H * (dn + dr), D], "normal", 0.02, True)
            else:
                P(h + "attn.q_a_proj.weight", [rq, D], "normal", 0.02, True)
                P(h + "attn.q_a_norm.weight", [rq], "ones")
                P(h + "attn.q_b_proj.weight", [H * (dn + dr), rq], "normal", 0.02, True)
            P(h + "attn.kv_a_c.weight", [r, D], "normal", 0.02, True)
            P(h + "attn.kv_a_r.weight", [dr, D], "normal", 0.02, True)
            P(h + "attn.kv_a_norm.weight", [r], "ones")
            if mla["latent_norm"] == "layernorm":
                P(h + "attn.kv_a_norm.bias", [r], "zeros")
            P(h + "attn.kv_b_k.weight", [H * dn, r], "normal", 0.02, True)
            P(h + "attn.kv_b_v.weight", [H * dvh, r], "normal", 0.02, True)
            P(h + "attn.c_proj.weight", [D, H * dvh], "normal", proj_std, True)
        else:
            P(h + "attn.c_attn.weight", [(H + 2 * Hkv) * d, D], "normal", 0.02, True)
            if m["attn_bias"]:
                P(h + "attn.c_attn.bias", [(H + 2 * Hkv) * d], "zeros")
            P(h + "attn.c_proj.weight", [D, H * d], "normal", proj_std, True)
        if m["proj_bias"]:
            P(h + "attn.c_proj.bias", [D], "zeros")
        norm(h + "ln_2")
        gated = m["mlp"] in ("geglu", "swiglu")
        P(h + "mlp.c_fc.weight", [2 * F if gated else F, D], "normal", 0.02, True)
        if m["mlp_bias"]:
            P(h + "mlp.c_fc.bias", [2 * F if gated else F], "zeros")
        P(h + "mlp.c_proj.weight", [D, F], "normal", proj_std, True)
        if m["mlp_bias"]:
            P(h + "mlp.c_proj.bias", [D], "zeros")
    norm("ln_f")
    if not m["tie_embeddings"]:
        P("lm_head.weight", [Vp, D], "normal", 0.02, True)
    return e


def make_config(model=None, family="gpt2", train=None, name="inline"):
    """A complete config dict (what bin/gen writes to config.json) from schema defaults plus overrides."""
    m = _merge(MODEL_DEFAULTS, FAMILY_DEFAULTS[family])
    m = _merge(m, model or {})
    dv = derive(m)
    m["vocab_padded"] = dv["vocab_padded"]
    tr = _merge(TRAIN_DEFAULTS, train or {})
    exp = expected_params(m, dv)
    params = [dict(name=n, **v) for n, v in exp.items()]
    return {"name": name, "family": family, "spec": "", "overrides": [], "model": m, "derived": dv,
            "train": tr, "params": params}


def load_config(path):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        die(f"{path}: cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        die(f"{path}: bad JSON: {e}")
    return check_config(cfg, path)


def check_config(cfg, path):
    """Check the fields the reference reads; the derived sizes and the parameter list must be what this file
    derives from the model fields on its own (an independent check of the generator)."""
    for sec in ("model", "train", "params"):
        if sec not in cfg:
            die(f"{path}: missing field {sec}")
    m, tr = cfg["model"], cfg["train"]
    for k in MODEL_DEFAULTS:
        if k not in m:
            die(f"{path}: missing field model.{k}")
    for k in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "eps", "grad_clip", "batch_size", "grad_accum",
              "warmup_steps", "steps", "seed"):
        if k not in tr:
            die(f"{path}: missing field train.{k}")
    mine = derive(m)
    dv = cfg.get("derived") or mine
    for k in ("head_dim", "n_kv_head", "mlp_hidden"):
        if k in dv and dv[k] != mine[k]:
            die(f"{path}: derived.{k} = {dv[k]}, the reference derives {mine[k]}")
    if "layers" in dv:
        if len(dv["layers"]) != m["n_layer"]:
            die(f"{path}: derived.layers has {len(dv['layers'])} entries for {m['n_layer']} layers")
        for l, (a, b) in enumerate(zip(dv["layers"], mine["layers"])):
            for k in ("attention", "window", "sink", "kv_lora_rank", "q_lora_rank"):
                if a.get(k) != b[k]:
                    die(f"{path}: derived.layers[{l}].{k} = {a.get(k)!r}, the reference derives {b[k]!r}")
    Vp = m.get("vocab_padded", dv.get("vocab_padded", mine["vocab_padded"]))
    if Vp < m["vocab_size"]:
        die(f"{path}: vocab_padded {Vp} < vocab_size {m['vocab_size']}")
    mine["vocab_padded"] = Vp
    for l, L in enumerate(mine["layers"]):
        if L["attention"] == "swa" and (L["window"] < 1 or L["sink"] < 0):
            die(f"{path}: layer {l}: window {L['window']} / sink {L['sink']} out of range")
    if m["d_model"] % m["n_head"] or m["n_head"] % mine["n_kv_head"]:
        die(f"{path}: n_head {m['n_head']} must divide d_model {m['d_model']} and be a multiple of n_kv_head "
            f"{mine['n_kv_head']}")
    exp = expected_params(m, mine)
    params = cfg["params"]
    seen = set()
    for i, p in enumerate(params):
        for k in ("name", "shape", "decay", "init"):
            if not isinstance(p, dict) or k not in p:
                die(f"{path}: params[{i}]: missing field {k}")
        n = p["name"]
        if n not in exp:
            die(f"{path}: param {n}: not in docs/ir_decoder.md's table for this model")
        if n in seen:
            die(f"{path}: param {n}: listed twice")
        seen.add(n)
        x = exp[n]
        if list(p["shape"]) != x["shape"]:
            die(f"{path}: param {n}: shape {p['shape']} != {x['shape']}")
        if p["init"] != x["init"]:
            die(f"{path}: param {n}: init {p['init']} != {x['init']}")
        if x["init"] in ("normal", "fill") and abs(float(p.get("std", float("nan"))) - x["std"]) > 1e-9 * abs(x["std"]):
            die(f"{path}: param {n}: std {p.get('std')} != {x['std']}")
        if bool(p["decay"]) != x["decay"]:
            die(f"{path}: param {n}: decay {p['decay']} != {x['decay']}")
        if bool(p.get("frozen", False)) != x["frozen"]:
            die(f"{path}: param {n}: frozen {p.get('frozen', False)} != {x['frozen']}")
    missing = [n for n in exp if n not in seen]
    if missing:
        die(f"{path}: params: missing {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")
    return cfg, Model(m, mine), tr, params


# ----------------------------------------------------------------------------------------------
# counter-based dropout masks (docs/ir_decoder.md), in numpy uint64 arithmetic (wrapping)

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C_CTR = 0xD1B54A32D192ED03
_C_I = 0x8CB92BA72F3D8DD7
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def hash64(x):
    """splitmix64's finaliser over a uint64 array: z = x + φ; z = (z ^ z>>30)·M1; z = (z ^ z>>27)·M2; z ^ z>>31."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        return z ^ (z >> np.uint64(31))


def mf_uniform(seed, stream, ctr, n):
    """u_i = (hash64(seed ^ stream·φ ^ ctr·C ^ i·C') >> 40) · 2^−24 for i = 0 … n−1 (float64, exact)."""
    base = (seed ^ ((stream * _GOLDEN) & _M64) ^ ((ctr * _C_CTR) & _M64)) & _M64
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = np.uint64(base) ^ (i * np.uint64(_C_I))
    return (hash64(x) >> np.uint64(40)).astype(np.float64) * 2.0 ** -24


def dropout_keep(seed, stream, ctr, shape, p):
    n = int(np.prod(shape))
    return torch.from_numpy(mf_uniform(seed, stream, ctr, n) >= p).reshape(shape)


# ----------------------------------------------------------------------------------------------
# the model, from the math

def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mu) * torch.rsqrt(var + eps) * w + b


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def dyt(x, alpha, w, b):
    return w * torch.tanh(alpha * x) + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x * torch.sigmoid(x)


def linear(x, w, b=None):
    y = x @ w.t()  # w is [out, in]
    return y + b if b is not None else y


def rope(x, base, layout):
    """Rotate the last dim of x [..., T, r] at positions 0 … T−1."""
    T, r = x.shape[-2], x.shape[-1]
    half = r // 2
    theta = base ** (-2.0 * torch.arange(half, dtype=DTYPE) / r)
    ang = torch.arange(T, dtype=DTYPE)[:, None] * theta[None, :]  # [T, r/2]
    cos, sin = ang.cos().to(x.device), ang.sin().to(x.device)
    if layout == "half":
        a, b = x[..., :half], x[..., half:]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).reshape(x.shape)


def alibi_slopes(H):
    def pow2(n):
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    if H & (H - 1) == 0:
        return pow2(H)
    c = 1 << (H.bit_length() - 1)
    return pow2(c) + pow2(2 * c)[0::2][:H - c]


def sinusoidal_table(T, D):
    pe = torch.zeros(T, D, dtype=DTYPE)
    t = torch.arange(T, dtype=DTYPE)[:, None]
    w = 10000.0 ** (-2.0 * torch.arange(D // 2, dtype=DTYPE) / D)
    pe[:, 0::2] = torch.sin(t * w)
    pe[:, 1::2] = torch.cos(t * w)
    return pe


def attn_mask(T, window=None, sink=0, device="cpu"):
    """[T, T] bool, True where query i may attend key j: j ≤ i and (no window, or i − j < W or j < S)."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    ok = j <= i
    if window is not None:
        ok = ok & (((i - j) < window) | (j < sink))
    return ok


class Model:
    """The decoder of one config: model fields m and derived sizes dv (every variant of the schema)."""

    def __init__(self, m, dv):
        self.m, self.dv = m, dv
        self.V, self.Vp, self.D, self.H = m["vocab_size"], dv["vocab_padded"], m["d_model"], m["n_head"]
        self.Hkv, self.d, self.F = dv["n_kv_head"], dv["head_dim"], dv["mlp_hidden"]
        dr = m["dropout"]
        self.p_attn, self.p_resid, self.p_mlp = float(dr["attn"]), float(dr["resid"]), float(dr["mlp"])
        self.has_dropout = self.p_attn > 0 or self.p_resid > 0 or self.p_mlp > 0

    # -- pieces --
    def norm(self, W, pfx, x):
        kind, eps = self.m["norm"], self.m["ln_eps"]
        if kind == "layernorm":
            return layernorm(x, W[pfx + ".weight"], W[pfx + ".bias"], eps)
        if kind == "rmsnorm":
            return rmsnorm(x, W[pfx + ".weight"], eps)
        return dyt(x, W[pfx + ".alpha"], W[pfx + ".weight"], W[pfx + ".bias"])

    def attend(self, q, k, v, scale, mask, slopes, drop):
        """q, k [B, H, T, dqk], v [B, H, T, dv] (already expanded per query head) -> [B, T, H·dv]."""
        B, H, T, _ = q.shape
        s = (q @ k.transpose(-1, -2)) * scale
        if slopes is not None:
            i = torch.arange(T, device=q.device, dtype=DTYPE)
            dist = i[:, None] - i[None, :]  # i − j
            m = torch.tensor(slopes, dtype=DTYPE, device=q.device)
            s = s - m[:, None, None] * dist[None]
        s = s.masked_fill(~mask, float("-inf"))
        p = torch.softmax(s, dim=-1)
        if drop is not None and self.p_attn > 0:
            p = self.dropout(p, drop, self.p_attn)
        return (p @ v).transpose(1, 2).reshape(B, T, -1)

    def dropout(self, x, drop, p):
        """drop = [seed, ctr, next stream]; element i of x in row-major order of the micro-batch tensor."""
        seed, ctr, stream = drop
        drop[2] += 1
        keep = dropout_keep(seed, stream, ctr, tuple(x.shape), p).to(x.device)
        return torch.where(keep, x / (1.0 - p), torch.zeros_like(x))

    def attn_full(self, W, h, a, Ly, drop):
        m = self.m
        B, T, _ = a.shape
        H, Hkv, d = self.H, self.Hkv, self.d
        qkv = linear(a, W[h + "attn.c_attn.weight"], W.get(h + "attn.c_attn.bias"))
        q, k, v = qkv.split([H * d, Hkv * d, Hkv * d], dim=-1)
        q = q.reshape(B, T, H, d).transpose(1, 2)
        k = k.reshape(B, T, Hkv, d).transpose(1, 2)
        v = v.reshape(B, T, Hkv, d).transpose(1, 2)
        if m["position"] == "rope":
            q, k = rope(q, m["rope_base"], m["rope_layout"]), rope(k, m["rope_base"], m["rope_layout"])
        idx = torch.tensor([h_ * Hkv // H for h_ in range(H)], device=a.device)  # kv head ⌊h·Hkv/H⌋
        k, v = k.index_select(1, idx), v.index_select(1, idx)
        if Ly["attention"] == "swa":
            mask = attn_mask(T, Ly["window"], Ly["sink"], a.device)
        else:
            mask = attn_mask(T, device=a.device)
        slopes = alibi_slopes(H) if m["position"] == "alibi" else None
        return self.attend(q, k, v, 1.0 / math.sqrt(d), mask, slopes, drop)

    def attn_mla(self, W, h, a, Ly, drop):
        m, mla = self.m, self.m["mla"]
        B, T, _ = a.shape
        H = self.H
        dn, dr, dvh = mla["qk_nope_head_dim"], mla["qk_rope_head_dim"], mla["v_head_dim"]
        eps, base, layout = mla["latent_eps"], m["rope_base"], mla["rope_layout"]
        if Ly["q_lora_rank"] == 0:
            q = linear(a, W[h + "attn.q_proj.weight"])
        else:
            qa = rmsnorm(linear(a, W[h + "attn.q_a_proj.weight"]), W[h + "attn.q_a_norm.weight"], eps)
            q = linear(qa, W[h + "attn.q_b_proj.weight"])
        q = q.reshape(B, T, H, dn + dr).transpose(1, 2)
        q_n, q_r = q[..., :dn], rope(q[..., dn:], base, layout)
        c = linear(a, W[h + "attn.kv_a_c.weight"])
        if mla["latent_norm"] == "layernorm":
            c = layernorm(c, W[h + "attn.kv_a_norm.weight"], W[h + "attn.kv_a_norm.bias"], eps)
        else:
            c = rmsnorm(c, W[h + "attn.kv_a_norm.weight"], eps)
        k_r = rope(linear(a, W[h + "attn.kv_a_r.weight"]), base, layout)  # [B, T, dr], one for all heads
        k_n = linear(c, W[h + "attn.kv_b_k.weight"]).reshape(B, T, H, dn).transpose(1, 2)
        v = linear(c, W[h + "attn.kv_b_v.weight"]).reshape(B, T, H, dvh).transpose(1, 2)
        qf = torch.cat((q_n, q_r), dim=-1)
        kf = torch.cat((k_n, k_r[:, None].expand(B, H, T, dr)), dim=-1)
        return self.attend(qf, kf, v, 1.0 / math.sqrt(dn + dr), attn_mask(T, device=a.device), None, drop)

    def mlp(self, W, h, f, drop):
        kind, F = self.m["mlp"], self.F
        u = linear(f, W[h + "mlp.c_fc.weight"], W.get(h + "mlp.c_fc.bias"))
        if kind == "gelu":
            u = gelu_tanh(u)
        elif kind == "relu":
            u = torch.relu(u)
        elif kind == "silu":
            u = silu(u)
        else:
            gate, up = u[..., :F], u[..., F:]
            u = (gelu_tanh(gate) if kind == "geglu" else silu(gate)) * up
        if drop is not None and self.p_mlp > 0:
            u = self.dropout(u, drop, self.p_mlp)
        return linear(u, W[h + "mlp.c_proj.weight"], W.get(h + "mlp.c_proj.bias"))

    def forward(self, W, tokens, drop=None):
        """tokens [B, T] int -> logits [B, T, Vp]. drop: None (no dropout) or (seed, ctr) of this micro-step."""
        m = self.m
        B, T = tokens.shape
        if drop is not None:
            drop = [int(drop[0]), int(drop[1]), 1]  # streams count from 1 in forward order
        x = W["wte.weight"][tokens.long()]
        if m["position"] in ("learned", "sinusoidal"):
            x = x + W["wpe.weight"][:T]
        for l, Ly in enumerate(self.dv["layers"]):
            h = f"h.{l}."
            a = self.norm(W, h + "ln_1", x)
            if Ly["attention"] == "mla":
                a = self.attn_mla(W, h, a, Ly, drop)
            else:
                a = self.attn_full(W, h, a, Ly, drop)
            a = linear(a, W[h + "attn.c_proj.weight"], W.get(h + "attn.c_proj.bias"))
            if drop is not None and self.p_resid > 0:
                a = self.dropout(a, drop, self.p_resid)
            x = x + a
            f = self.mlp(W, h, self.norm(W, h + "ln_2", x), drop)
            if drop is not None and self.p_resid > 0:
                f = self.dropout(f, drop, self.p_resid)
            x = x + f
        x = self.norm(W, "ln_f", x)
        head = W["wte.weight"] if m["tie_embeddings"] else W["lm_head.weight"]
        return x @ head.t()


def xent_mean(logits, targets, V):
    """Mean over all tokens of logsumexp(logits[:V]) − logits[t]; columns ≥ V never enter the softmax."""
    real = logits[..., :V]
    losses = torch.logsumexp(real, dim=-1) - real.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return losses.mean()


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
        elif p["init"] == "ones":
            t = torch.ones(shape, dtype=DTYPE)
        elif p["init"] == "fill":
            t = torch.full(shape, float(p["std"]), dtype=DTYPE)
        elif p["init"] == "sinusoidal":
            t = sinusoidal_table(shape[0], shape[1])
        else:
            die(f"param {p['name']}: unknown init {p['init']!r}")
        if p["name"] in ("wte.weight", "lm_head.weight"):
            t[V:] = 0.0  # padded vocabulary rows are zero
        w[p["name"]] = t.float().double()  # round to f32: the golden init is what we compute with
    return w, g


def make_data(g, S, rows, T, V):
    tokens = torch.randint(0, V, (S, rows, T), generator=g, dtype=torch.int64).to(torch.int32)
    targets = torch.randint(0, V, (S, rows, T), generator=g, dtype=torch.int64).to(torch.int32)
    return tokens, targets


def leaves(W0, frozen, device):
    return {n: t.detach().clone().to(device).requires_grad_(not frozen[n]) for n, t in W0.items()}


def loss_and_grads(model, W, tokens, targets, accum, dseed, step):
    """One optimizer step's loss over its `accum` micro-batches (rows k·B …), gradients in .grad.
    Returns (loss, logits [A·B, T, Vp]); dseed None: no dropout."""
    for t in W.values():
        t.grad = None
    rows = tokens.shape[0]
    B = rows // accum
    total, logits = 0.0, []
    for k in range(accum):
        drop = None if dseed is None else (dseed, step * accum + k)
        lg = model.forward(W, tokens[k * B:(k + 1) * B], drop)
        total = total + xent_mean(lg, targets[k * B:(k + 1) * B], model.V) / accum
        logits.append(lg.detach())
    total.backward()
    return total.detach(), torch.cat(logits, dim=0)


def grad_of(t):
    return t.grad if t.grad is not None else torch.zeros_like(t)


# ----------------------------------------------------------------------------------------------
# AdamW, by hand, exactly docs/ir.md's adamw op

def lr_at(s, tr):
    """Learning rate of 0-based step s: linear warmup, then cosine to min_lr over the remaining steps."""
    lr, lo, wu, n = tr["lr"], tr["min_lr"], tr["warmup_steps"], tr["steps"]
    if s < wu:
        return lr * (s + 1) / wu
    return lo + 0.5 * (lr - lo) * (1.0 + math.cos(math.pi * (s - wu) / max(1, n - wu)))


def adamw_step(W, state, decay, s, tr):
    """One update of every trainable parameter from its .grad; state: name -> (m, v); s is the 0-based step."""
    b1, b2, eps, wd, clip = tr["beta1"], tr["beta2"], tr["eps"], tr["weight_decay"], tr["grad_clip"]
    lr = lr_at(s, tr)
    t = s + 1
    bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    norm = math.sqrt(sum(float((grad_of(p) ** 2).sum()) for p in W.values()))  # global norm of all grads
    c = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
    with torch.no_grad():
        for name, p in W.items():
            if not p.requires_grad:
                continue  # frozen: zero gradient, zero moments, no decay — it never moves
            g = c * p.grad
            m, v = state[name]
            m.mul_(b1).add_((1.0 - b1) * g)
            v.mul_(b2).add_((1.0 - b2) * g * g)
            wd_i = wd if decay[name] else 0.0
            p.sub_(lr * (wd_i * p + (m / bc1) / (torch.sqrt(v / bc2) + eps)))


class Run:
    """Everything a training run needs: the model, initial weights, data, optimizer settings."""

    def __init__(self, model, W0, decay, frozen, tokens, targets, tr, dseed, device):
        self.model, self.W0, self.decay, self.frozen = model, W0, decay, frozen
        self.tokens, self.targets, self.tr, self.dseed, self.device = tokens, targets, tr, dseed, device
        self.accum = tr["grad_accum"]

    def step_loss(self, W, s):
        return loss_and_grads(self.model, W, self.tokens[s].to(self.device), self.targets[s].to(self.device),
                              self.accum, self.dseed, s)

    def train_manual(self, nsteps):
        W = leaves(self.W0, self.frozen, self.device)
        state = {n: (torch.zeros_like(t), torch.zeros_like(t)) for n, t in W.items()}
        losses = []
        for s in range(nsteps):
            loss, _ = self.step_loss(W, s)
            losses.append(float(loss))
            adamw_step(W, state, self.decay, s, self.tr)
        return W, losses

    def train_torch_optim(self, nsteps):
        """The same training with torch.optim.AdamW + clip_grad_norm_ (for the self-check only)."""
        tr = self.tr
        W = leaves(self.W0, self.frozen, self.device)
        train = [n for n in W if not self.frozen[n]]
        groups = [{"params": [W[n] for n in train if self.decay[n]], "weight_decay": tr["weight_decay"]},
                  {"params": [W[n] for n in train if not self.decay[n]], "weight_decay": 0.0}]
        groups = [gp for gp in groups if gp["params"]]
        opt = torch.optim.AdamW(groups, lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]), eps=tr["eps"])
        for s in range(nsteps):
            opt.zero_grad(set_to_none=True)
            self.step_loss(W, s)
            if tr["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_([W[n] for n in train], tr["grad_clip"])
            for grp in opt.param_groups:
                grp["lr"] = lr_at(s, tr)
            opt.step()
        return W

    def self_check_adamw(self):
        n = min(2, self.tokens.shape[0])
        Wa, _ = self.train_manual(n)
        Wb = self.train_torch_optim(n)
        worst = max(float((Wa[k] - Wb[k]).abs().max()) for k in Wa)
        if not worst <= 1e-10:
            die(f"self-check failed: hand-written AdamW differs from torch.optim.AdamW after {n} steps by {worst:.3e}")
        return n, worst


# ----------------------------------------------------------------------------------------------

def main(argv=None, prog="decoder_ref"):
    global PROG
    PROG = prog
    ap = argparse.ArgumentParser(prog=prog, description="PyTorch reference of the generalised decoder: "
                                 "writes the golden safetensors file.")
    ap.add_argument("config", help="config.json written by bin/gen")
    ap.add_argument("out", help="golden .safetensors to write")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps S (and data batches)")
    ap.add_argument("--seed", type=int, default=1234, help="torch generator seed for weights and data")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--hf", action="store_true", help="also check logits against transformers (no dropout)")
    a = ap.parse_args(argv)
    if a.steps < 1:
        die(f"--steps must be ≥ 1, got {a.steps}")
    if a.device == "cuda":
        if not torch.cuda.is_available():
            die("--device cuda: no CUDA device visible to torch")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)

    cfg, model, tr, params = load_config(a.config)
    m = model.m
    V, T = model.V, m["seq_len"]
    rows = tr["batch_size"] * tr["grad_accum"]  # all micro-batches of a step
    decay = {p["name"]: bool(p["decay"]) for p in params}
    frozen = {p["name"]: bool(p.get("frozen", False)) for p in params}
    dseed = int(tr["seed"]) % (1 << 24) if model.has_dropout else None

    W0, g = init_weights(params, V, a.seed)
    tokens, targets = make_data(g, a.steps, rows, T, V)
    run = Run(model, W0, decay, frozen, tokens, targets, tr, dseed, a.device)

    # step 0 at init: logits, loss, gradients
    W = leaves(W0, frozen, a.device)
    loss0, logits0 = run.step_loss(W, 0)
    grads = {n: grad_of(t).detach().cpu() for n, t in W.items()}
    gnorm = math.sqrt(sum(float((t ** 2).sum()) for t in grads.values()))

    n_chk, worst = run.self_check_adamw()
    _, losses = run.train_manual(a.steps)
    if abs(losses[0] - float(loss0)) > 1e-12:
        die(f"internal: step-0 loss of the training run {losses[0]} != {float(loss0)}")

    hf = None
    if a.hf:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import hf_crosscheck
        with torch.no_grad():
            nodrop = model.forward({k: v.to(a.device) for k, v in W0.items()}, tokens[0].to(a.device), None)
        try:
            hf = hf_crosscheck.compare(m, model.dv, W0, tokens[0], nodrop, a.device)
        except hf_crosscheck.CrossCheckError as e:
            die(f"--hf: {e}")

    out = {"tokens": tokens, "targets": targets,
           "logits": logits0[..., :V].cpu().float(), "loss": loss0.reshape(1).cpu().float(),
           "losses": torch.tensor(losses, dtype=DTYPE).float()}
    for n in W0:
        out["init." + n] = W0[n].float()
        out["grad." + n] = grads[n].float()
    meta = {"spec": cfg.get("spec", ""), "overrides": json.dumps(cfg.get("overrides", [])),
            "name": cfg.get("name", ""), "seed": str(a.seed), "steps": str(a.steps), "dtype": "float64",
            "device": a.device, "torch": torch.__version__}
    if dseed is not None:
        meta["dropout_seed"] = str(dseed)
    write_safetensors(a.out, out, meta)

    # self-test of the writer: read the file back, every tensor and the metadata must be identical
    back, bmeta = read_safetensors(a.out)
    if set(back) != set(out) or bmeta != meta:
        die(f"{a.out}: read-back has different names or metadata")
    for n, t in out.items():
        if back[n].dtype != t.dtype or not torch.equal(back[n], t.cpu()):
            die(f"{a.out}: read-back of {n} differs from what was written")

    kinds = ",".join(L["attention"] for L in model.dv["layers"])
    nbytes = os.path.getsize(a.out)
    print(f"{prog}: {cfg.get('name', '?')}  L={m['n_layer']} D={m['d_model']} H={m['n_head']} Hkv={model.Hkv} "
          f"T={T} V={V} Vp={model.Vp}  B={tr['batch_size']} accum={tr['grad_accum']}  seed={a.seed} "
          f"device={a.device} float64")
    print(f"  layers [{kinds}] position={m['position']} norm={m['norm']} mlp={m['mlp']} F={model.F} "
          f"tied={m['tie_embeddings']} dropout attn/resid/mlp={model.p_attn}/{model.p_resid}/{model.p_mlp}"
          + (f" (seed {dseed})" if dseed is not None else ""))
    print(f"  step-0 loss {float(loss0):.6f} (ln V = {math.log(V):.6f}), grad norm {gnorm:.6f}")
    print(f"  losses[{a.steps}]: " + " ".join(f"{x:.5f}" for x in losses))
    print(f"  AdamW self-check vs torch.optim.AdamW: {n_chk} steps, max |Δparam| = {worst:.2e} (≤ 1e-10) ok")
    if hf:
        print(f"  HF {hf['model']} (transformers {hf['version']}): logits relative L2 {hf['rel']:.2e} (≤ 1e-6) ok")
    print(f"  wrote {a.out}: {len(out)} tensors ({len(W0)} init + {len(W0)} grad + tokens targets logits "
          f"loss losses), {nbytes} bytes; read back identical")


if __name__ == "__main__":
    main()
