#!/usr/bin/env python3
"""A moonforge checkpoint is a Hugging Face GPT-2: its logits equal the runtime's.

    python3 tests/hf_check.py CKPT_DIR LOGITS.safetensors [--tol 1e-4] [--loss-tol X] [--require-transformers]

CKPT_DIR is a checkpoint directory (RUN/ckpt/step_NNNNNN: model.safetensors + config.json) and
LOGITS.safetensors what `runtime ... --logits SHARD --out LOGITS.safetensors` wrote with the same
weights: tokens [B, T], targets [B, T], logits [B, T, V], loss [1].

With transformers importable, GPT2LMHeadModel.from_pretrained(CKPT_DIR) computes the logits (in
float32, as transformers loads the file). Without it (and without --require-transformers) a short
float64 forward pass written after Hugging Face's GPT-2 conventions reads the same files: Conv1D
weights [in, out] applied as x @ W + b, c_attn's output split into q | k | v, heads as contiguous
column blocks, gelu_new (tanh), LayerNorm with config.layer_norm_epsilon, head tied to wte. Either
way the check is that the file layout means what transformers expects it to mean.

Passes when the relative L2 distance of the logits is <= --tol and the mean next-token losses agree
to within --loss-tol (relative; default 10·tol). Prints one line; exits 1 with the reason otherwise.
"""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
from gpt2_ref import read_safetensors  # noqa: E402


def die(msg):
    print(f"hf_check: {msg}", file=sys.stderr)
    sys.exit(1)


def hf_style_forward(ckpt, tokens):
    """float64 GPT-2 forward over the Hugging Face files, written from their conventions."""
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "gpt2" or "GPT2LMHeadModel" not in cfg.get("architectures", []):
        die(f"{ckpt}/config.json: model_type {cfg.get('model_type')!r}, architectures {cfg.get('architectures')!r}")
    if cfg.get("activation_function") != "gelu_new" or not cfg.get("tie_word_embeddings", True):
        die(f"{ckpt}/config.json: expected activation_function gelu_new and tied embeddings")
    W, meta = read_safetensors(os.path.join(ckpt, "model.safetensors"))
    if meta.get("format") != "pt":
        die(f"{ckpt}/model.safetensors: metadata format is {meta.get('format')!r}; transformers wants 'pt'")
    W = {k[len("transformer."):] if k.startswith("transformer.") else k: v.double() for k, v in W.items()}
    L, H, eps = cfg["n_layer"], cfg["n_head"], cfg["layer_norm_epsilon"]
    V, D = cfg["vocab_size"], cfg["n_embd"]
    if tuple(W["wte.weight"].shape) != (V, D):
        die(f"wte.weight has shape {tuple(W['wte.weight'].shape)}, config says [{V}, {D}]")
    expected = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}
    for l in range(L):
        for s in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            expected |= {f"h.{l}.{s}.weight", f"h.{l}.{s}.bias"}
    if set(W) != expected:
        die(f"tensors differ from GPT-2's: missing {sorted(expected - set(W))[:3]}, extra {sorted(set(W) - expected)[:3]}")

    def ln(x, p):
        return torch.nn.functional.layer_norm(x, (D,), W[p + ".weight"], W[p + ".bias"], eps)

    def conv1d(x, p):  # Hugging Face Conv1D: weight [in, out]
        return x @ W[p + ".weight"] + W[p + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))

    B, T = tokens.shape
    x = W["wte.weight"][tokens.long()] + W["wpe.weight"][:T]
    d = D // H
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        h = f"h.{l}."
        q, k, v = conv1d(ln(x, h + "ln_1"), h + "attn.c_attn").split(D, dim=-1)
        q, k, v = (t.view(B, T, H, d).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ v
        x = x + conv1d(a.transpose(1, 2).reshape(B, T, D), h + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, h + "ln_2"), h + "mlp.c_fc")), h + "mlp.c_proj")
    return ln(x, "ln_f") @ W["wte.weight"].t()


def transformers_forward(ckpt, tokens):
    from transformers import GPT2LMHeadModel
    import transformers

    model = GPT2LMHeadModel.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=tokens.long()).logits
    return out.double(), f"transformers {transformers.__version__} GPT2LMHeadModel"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("logits")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--loss-tol", type=float, default=None)
    ap.add_argument("--require-transformers", action="store_true")
    a = ap.parse_args()
    try:
        R, _ = read_safetensors(a.logits)
    except (OSError, ValueError) as e:
        die(str(e))
    tokens, targets, ours = R["tokens"], R["targets"], R["logits"].double()
    try:
        import transformers  # noqa: F401
        have = True
    except ImportError:
        have = False
    if a.require_transformers and not have:
        die("transformers is not importable (--require-transformers)")
    if have:
        theirs, who = transformers_forward(a.ckpt, tokens)
    else:
        theirs, who = hf_style_forward(a.ckpt, tokens), "Hugging Face-convention float64 forward (no transformers here)"
    if theirs.shape != ours.shape:
        die(f"logits shape {tuple(theirs.shape)} (theirs) vs {tuple(ours.shape)} (runtime)")
    rel = float((theirs - ours).norm() / theirs.norm())
    loss_t = float(torch.nn.functional.cross_entropy(theirs.reshape(-1, theirs.shape[-1]), targets.reshape(-1).long()))
    loss_o = float(R["loss"][0])
    line = f"{who}: logits rel L2 {rel:.3e} (tol {a.tol:g}) | loss theirs {loss_t:.6f} runtime {loss_o:.6f}"
    loss_tol = a.loss_tol if a.loss_tol is not None else 10 * a.tol
    if not (rel <= a.tol and abs(loss_t - loss_o) <= loss_tol * abs(loss_t)):
        die("FAIL " + line)
    print("hf_check: ok " + line)


if __name__ == "__main__":
    main()
