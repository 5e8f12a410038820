#!/usr/bin/env python3
"""Independent PyTorch reference for ParScale on a Qwen2 backbone: writes the golden files.

    /usr/bin/python3 tests/reference/parscale_ref.py out/config.json tests/golden/NAME.safetensors [--steps 10]

Written from ../shared/notes/models.md §4 and docs/ir_parscale.md (not from gen/ or runtime/), in float64. It is
decoder_ref.py (same options, same golden format, same initialisation and data draws, same hand-written AdamW)
with the model extended by ParScale; with parscale.n = 1 the model is decoder_ref's, i.e. plain Qwen2 (q/k/v bias,
no o bias, RMSNorm, SwiGLU, half-split RoPE, GQA).

THE MODEL, P = parscale.n > 1 (replica-major rows: row p·B + b is replica p of sequence b):

    x = wte[tok]                                     [B, T, D]
    x = cat(x, …, x) over P                          [P·B, T, D]
    per layer l:
        if cross-replica attention on l (parscale.cross_attn; parscale.cross_attn_layers, all layers if empty):
            u = RMSNorm(x; cra.ln);  q, k, v = split(u·c_attnᵀ + bias) into H heads of d
            at each (b, t, head): s_pr = q_p·k_r/√d over replicas p, r;  o_p = Σ_r softmax_r(s_pr)·v_r
            x = x + o·c_projᵀ
        a = RMSNorm(x; ln_1); q, k, v as Qwen2 (bias), q and k rotated (RoPE half-split, positions 0 … T−1)
        keys of replica p = [prefix_k[p] (never rotated) ; k], values = [prefix_v[p] ; v]; the prefix entries
        are visible to every query (no causal/window mask, no ALiBi term), the real keys causally (and the window)
        x = x + o·c_projᵀ;  x = x + MLP(RMSNorm(x; ln_2))
    h = RMSNorm(x; ln_f), h_p = h[p·B : (p+1)·B]
    z[..., c·P + p] = h_p[..., c];  a = fc2(SiLU(fc1(z)))  (both with bias)
    w = (1 − ε)·softmax_p(a) + ε/P;  y = Σ_p w_p·h_p;  logits = y·Wlmᵀ (tied: wte)   — B rows, the loss is on these

New parameters: h.{l}.attn.prefix_k/_v [P, Hkv, NPRE, d] normal 0.02 (no decay); h.{l}.cra.ln.weight ones,
h.{l}.cra.c_attn.weight [3·H·d, D] normal 0.02 (decay), .bias zeros, h.{l}.cra.c_proj.weight [D, H·d] normal 0.02
(decay); parscale.agg.fc1.weight [D, P·D], .bias [D], parscale.agg.fc2.weight [P, D], .bias [P] (weights normal
0.02 with decay, biases zeros). parscale.freeze_backbone: every other parameter is frozen (no gradient, no decay).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import decoder_ref as dr  # noqa: E402

DTYPE = dr.DTYPE
PS_DEFAULTS = {"n": 1, "n_tokens": 48, "prefix_std": 0.02, "attn_smooth": 0.01, "cross_attn": False, "cross_attn_layers": [],
               "freeze_backbone": False}
dr.FAMILY_DEFAULTS.setdefault("qwen2", {"norm": "rmsnorm", "mlp": "swiglu", "position": "rope", "rope_layout": "half",
                                        "rope_base": 1e6, "attn_bias": True, "proj_bias": False, "mlp_bias": False,
                                        "tie_embeddings": True, "ln_eps": 1e-6})


def as_list(v):
    """A Lua list from config.json: [] or {} when empty (util.json writes an empty table as an object)."""
    if isinstance(v, dict):
        return [v[k] for k in sorted(v, key=int)]
    return list(v or [])


def parscale_fields(cfg, path):
    ps = dict(PS_DEFAULTS)
    ps.update(cfg.get("parscale") or {})
    ps["cross_attn_layers"] = as_list(ps["cross_attn_layers"])
    m = cfg["model"]
    P, L = int(ps["n"]), int(m["n_layer"])
    if P < 1 or ps["n_tokens"] < 1 or not (0 <= ps["attn_smooth"] < 1):
        dr.die(f"{path}: parscale fields out of range: {ps}")
    if P > 1 and (m["position"] in ("learned", "sinusoidal") or any(v > 0 for v in m["dropout"].values())):
        dr.die(f"{path}: ParScale with position {m['position']} or dropout is not modelled here")
    layers = ps["cross_attn_layers"] if ps["cross_attn_layers"] else list(range(L))
    ps["cra"] = sorted(set(layers)) if (ps["cross_attn"] and P > 1) else []
    if any(not 0 <= l < L for l in ps["cra"]):
        dr.die(f"{path}: parscale.cross_attn_layers {ps['cra']} outside 0..{L - 1}")
    return ps


_base_expected_params = dr.expected_params


def make_expected_params(ps):
    """decoder_ref.expected_params plus docs/ir_parscale.md's table (and the frozen backbone)."""
    base = _base_expected_params

    def expected(m, dv):
        e = base(m, dv)
        P = int(ps["n"])
        if P == 1:
            return e
        if ps["freeze_backbone"]:
            for v in e.values():
                v["frozen"], v["decay"] = True, False
        D, H, Hkv, d = m["d_model"], m["n_head"], dv["n_kv_head"], dv["head_dim"]
        NP = int(ps["n_tokens"])

        def add(name, shape, init, std=0.0, decay=False):
            e[name] = {"shape": list(shape), "init": init, "std": std, "decay": decay, "frozen": False}

        for l in range(m["n_layer"]):
            add(f"h.{l}.attn.prefix_k", [P, Hkv, NP, d], "normal", float(ps["prefix_std"]))
            add(f"h.{l}.attn.prefix_v", [P, Hkv, NP, d], "normal", float(ps["prefix_std"]))
        for l in ps["cra"]:
            add(f"h.{l}.cra.ln.weight", [D], "ones")
            add(f"h.{l}.cra.c_attn.weight", [3 * H * d, D], "normal", 0.02, True)
            add(f"h.{l}.cra.c_attn.bias", [3 * H * d], "zeros")
            add(f"h.{l}.cra.c_proj.weight", [D, H * d], "normal", 0.02, True)
        add("parscale.agg.fc1.weight", [D, P * D], "normal", 0.02, True)
        add("parscale.agg.fc1.bias", [D], "zeros")
        add("parscale.agg.fc2.weight", [P, D], "normal", 0.02, True)
        add("parscale.agg.fc2.bias", [P], "zeros")
        return e

    return expected


class ParScaleModel(dr.Model):
    """decoder_ref's Model with P replicas, prefixes, cross-replica attention and the aggregation."""

    ps = None  # set by load_config before construction

    def __init__(self, m, dv):
        super().__init__(m, dv)
        self.P = int(self.ps["n"])
        self.NP = int(self.ps["n_tokens"])
        self.eps = float(self.ps["attn_smooth"])
        self.cra = set(self.ps["cra"])

    def attn_prefix(self, W, h, a, Ly):
        """Qwen2 attention of the P·B rows, each replica with its own NP prefix keys/values."""
        m = self.m
        PB, T, _ = a.shape
        P, B, H, Hkv, d, NP = self.P, PB // self.P, self.H, self.Hkv, self.d, self.NP
        qkv = dr.linear(a, W[h + "attn.c_attn.weight"], W.get(h + "attn.c_attn.bias"))
        q, k, v = qkv.split([H * d, Hkv * d, Hkv * d], dim=-1)
        q = q.reshape(PB, T, H, d).transpose(1, 2)
        k = k.reshape(PB, T, Hkv, d).transpose(1, 2)
        v = v.reshape(PB, T, Hkv, d).transpose(1, 2)
        if m["position"] == "rope":
            q, k = dr.rope(q, m["rope_base"], m["rope_layout"]), dr.rope(k, m["rope_base"], m["rope_layout"])
        rep = torch.arange(PB, device=a.device) // B  # replica of each row
        pk = W[h + "attn.prefix_k"][rep]  # [PB, Hkv, NP, d], not rotated
        pv = W[h + "attn.prefix_v"][rep]
        k, v = torch.cat((pk, k), dim=2), torch.cat((pv, v), dim=2)
        idx = torch.tensor([h_ * Hkv // H for h_ in range(H)], device=a.device)
        k, v = k.index_select(1, idx), v.index_select(1, idx)
        s = (q @ k.transpose(-1, -2)) / (d ** 0.5)  # [PB, H, T, NP + T]
        if m["position"] == "alibi":
            i = torch.arange(T, device=a.device, dtype=DTYPE)
            slopes = torch.tensor(dr.alibi_slopes(H), dtype=DTYPE, device=a.device)
            s[..., NP:] = s[..., NP:] - slopes[:, None, None] * (i[:, None] - i[None, :])[None]
        if Ly["attention"] == "swa":
            real = dr.attn_mask(T, Ly["window"], Ly["sink"], a.device)
        else:
            real = dr.attn_mask(T, device=a.device)
        mask = torch.cat((torch.ones(T, NP, dtype=torch.bool, device=a.device), real), dim=1)
        s = s.masked_fill(~mask, float("-inf"))
        p = torch.softmax(s, dim=-1)
        return (p @ v).transpose(1, 2).reshape(PB, T, -1)

    def cross_replica(self, W, h, x):
        """x + c_proj(CRA(c_attn(RMSNorm(x)))): softmax over the P replicas at each (b, t, head)."""
        PB, T, D = x.shape
        P, B, H, d = self.P, PB // self.P, self.H, self.d
        u = dr.rmsnorm(x, W[h + "cra.ln.weight"], self.m["ln_eps"])
        qkv = dr.linear(u, W[h + "cra.c_attn.weight"], W[h + "cra.c_attn.bias"])
        q, k, v = (t.reshape(P, B, T, H, d) for t in qkv.split([H * d] * 3, dim=-1))
        s = torch.einsum("pbthe,rbthe->bthpr", q, k) / (d ** 0.5)
        pr = torch.softmax(s, dim=-1)
        o = torch.einsum("bthpr,rbthe->pbthe", pr, v).reshape(PB, T, H * d)
        return x + dr.linear(o, W[h + "cra.c_proj.weight"])

    def forward(self, W, tokens, drop=None):
        if self.P == 1:
            return super().forward(W, tokens, drop)
        m, P = self.m, self.P
        B, T = tokens.shape
        x = W["wte.weight"][tokens.long()]
        x = torch.cat([x] * P, dim=0)  # replica-major
        for l, Ly in enumerate(self.dv["layers"]):
            h = f"h.{l}."
            if l in self.cra:
                x = self.cross_replica(W, h, x)
            a = self.attn_prefix(W, h, self.norm(W, h + "ln_1", x), Ly)
            x = x + dr.linear(a, W[h + "attn.c_proj.weight"], W.get(h + "attn.c_proj.bias"))
            x = x + self.mlp(W, h, self.norm(W, h + "ln_2", x), None)
        hs = self.norm(W, "ln_f", x).reshape(P, B, T, -1)  # h_p = hs[p]
        z = torch.stack([hs[p] for p in range(P)], dim=-1).reshape(B, T, -1)  # z[..., c·P + p] = h_p[..., c]
        u = dr.silu(dr.linear(z, W["parscale.agg.fc1.weight"], W["parscale.agg.fc1.bias"]))
        a = dr.linear(u, W["parscale.agg.fc2.weight"], W["parscale.agg.fc2.bias"])  # [B, T, P]
        w = (1.0 - self.eps) * torch.softmax(a, dim=-1) + self.eps / P
        y = sum(w[..., p:p + 1] * hs[p] for p in range(P))
        head = W["wte.weight"] if m["tie_embeddings"] else W["lm_head.weight"]
        return y @ head.t()


_base_load_config = dr.load_config


def load_config(path):
    import json
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        dr.die(f"{path}: cannot read: {e}")
    ps = parscale_fields(cfg, path)
    got = as_list(((cfg.get("derived") or {}).get("parscale") or {}).get("cra_layers", ps["cra"]))
    if got != ps["cra"]:
        dr.die(f"{path}: derived.parscale.cra_layers = {got}, the reference derives {ps['cra']}")
    ParScaleModel.ps = ps
    dr.expected_params = make_expected_params(ps)
    dr.Model = ParScaleModel
    return _base_load_config(path)


if __name__ == "__main__":
    dr.load_config = load_config
    dr.main(prog="parscale_ref")
