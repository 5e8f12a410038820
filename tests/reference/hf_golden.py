#!/usr/bin/env python3
"""A golden file whose logits, loss and every gradient come from transformers, for `runtime --golden`.

    python3 tests/reference/hf_golden.py CONFIG.json OUT.safetensors [--src SRC.safetensors] [--seed N]
                                         [--engine transformers|ref] [--device cpu|cuda]

CONFIG.json is bin/gen's config of the plan. With --src, a golden of the same plan (tests/golden/NAME.safetensors),
its initial weights (init.*) and step-0 tokens and targets are reused, so OUT holds the same inputs; without, the
weights are hf_crosscheck.spread_weights (wider than an init, so that a wrong layout moves everything) and the
tokens and targets are uniform draws, both from --seed. The model is
the transformers class hf_crosscheck.py picks for the configuration (GPT2LMHeadModel, LlamaForCausalLM,
Qwen2ForCausalLM, DeepseekV3ForCausalLM), float64, with transformers' three float32 islands (RMSNorm, RoPE table,
softmax) computed in float64 (hf_crosscheck.float64_islands). It runs as a function of OUR tensors: the
mapping hf_crosscheck.hf_weights (split q/k/v, [gate; up], kv_a / kv_b, Conv1D transposes, the vocabulary rows
< V) is applied to leaves in our names and layouts, and torch.func.functional_call runs the model on the result,
so autograd carries transformers' gradients back through the mapping into our names (the tied head's two uses
summed, the padded vocabulary rows zero) — no inverse mapping is written by hand.

OUT has the golden format of decoder_ref.py with one step (S = 1): init.* (= SRC's), grad.*, tokens/targets
[1, A·B, T], logits [A·B, T, V], loss [1] and losses [1] (the step-0 loss, before any update). The loss of a step
is the mean over its A micro-batches of each one's mean token cross-entropy over the V real columns
(decoder_ref.loss_and_grads, run on the engine). Frozen parameters get zero gradients. Configurations with dropout are refused
(transformers' dropout masks are not ours).

--engine ref swaps transformers for decoder_ref.py / parscale_ref.py's own forward (same driver, same file): the
self-test `make test` runs without transformers — its OUT must pass `runtime --golden --cpu` like SRC does.
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import decoder_ref as dr  # noqa: E402


def die(msg):
    print(f"hf_golden: {msg}", file=sys.stderr)
    sys.exit(1)


def load(config_path):
    """(cfg, reference model) with parscale_ref's family defaults when the config is a Qwen2 / ParScale one."""
    try:
        with open(config_path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        die(f"{config_path}: cannot read: {e}")
    if cfg.get("family") == "qwen2" or ((cfg.get("parscale") or {}).get("n", 1) or 1) > 1:
        import parscale_ref
        _, model, tr, params = parscale_ref.load_config(config_path)
    else:
        _, model, tr, params = dr.load_config(config_path)
    return cfg, model, tr, params


def transformers_forward(cfg, m, dv, device):
    """forward(W, tokens [B, T]) -> logits [B, T, V] of the transformers model picked for (m, dv)."""
    import hf_crosscheck as X
    from torch.func import functional_call
    if ((cfg.get("parscale") or {}).get("n", 1) or 1) > 1:
        raise X.CrossCheckError("parscale.n > 1 has no transformers counterpart")
    kind = X.pick(m, dv)
    hf = X.build(kind, m, dv, device)
    names = [n for n, _ in hf.named_parameters(remove_duplicate=False)]

    def forward(W, tokens):
        named = X.hf_weights(kind, m, dv, W)
        if m["tie_embeddings"]:
            named["lm_head.weight"] = named.get("model.embed_tokens.weight", named.get("transformer.wte.weight"))
        missing = [n for n in names if n not in named]
        if missing:
            raise X.CrossCheckError(f"{type(hf).__name__} parameter {missing[0]} has no counterpart in ours")
        given = {n: named[n] for n in names}
        with X.float64_islands(hf, float(m["rope_base"])):
            return functional_call(hf, given, args=(), kwargs={"input_ids": tokens.long().to(device)}).logits
    return forward, f"{type(hf).__name__} (transformers {__import__('transformers').__version__})"


def main():
    ap = argparse.ArgumentParser(description="golden file from transformers (logits, loss, all gradients)")
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--src", help="a golden of the same plan: its init.* weights and step-0 tokens/targets")
    ap.add_argument("--seed", type=int, default=7, help="without --src: weights and data from this seed")
    ap.add_argument("--engine", choices=("transformers", "ref"), default="transformers")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a = ap.parse_args()
    cfg, model, tr, params = load(a.config)
    m, dv = model.m, model.dv
    if model.has_dropout:
        die(f"{a.config}: the configuration has dropout, which transformers cannot reproduce")
    names = [p["name"] for p in params]
    A, B, T, V = int(tr["grad_accum"]), int(tr["batch_size"]), int(m["seq_len"]), int(m["vocab_size"])
    if a.src:
        src, _ = dr.read_safetensors(a.src)
        for n in names:
            if "init." + n not in src:
                die(f"{a.src}: no tensor init.{n} (a golden of another plan?)")
        init = {n: src["init." + n] for n in names}
        tokens, targets = src["tokens"][:1], src["targets"][:1]
        if tuple(tokens.shape) != (1, A * B, T):
            die(f"{a.src}: tokens have shape {tuple(tokens.shape)}, the plan needs [S, {A * B}, {T}]")
    else:
        import hf_crosscheck as X
        init = {n: t.float() for n, t in X.spread_weights(params, V, a.seed).items()}  # f32: what the runtime holds
        g = torch.Generator().manual_seed(a.seed + 1)
        tokens, targets = (torch.randint(0, V, (1, A * B, T), generator=g).to(torch.int32) for _ in range(2))

    if a.engine == "ref":
        def forward(W, tok):
            return model.forward(W, tok)[..., :V]
        what = f"{type(model).__name__} (tests/reference, float64)"
    else:
        try:
            forward, what = transformers_forward(cfg, m, dv, a.device)
        except ImportError as e:
            die(f"transformers is not importable: {e}")
        except Exception as e:  # CrossCheckError: the configuration has no transformers model
            die(f"{a.config}: {e}")

    class Engine:  # what decoder_ref.loss_and_grads calls: forward(W, tokens, drop) and V
        def forward(self, W, tok, drop):
            return forward(W, tok)
    Engine.V = V
    frozen = {p["name"]: bool(p.get("frozen", False)) for p in params}
    W = {n: init[n].to(device=a.device, dtype=dr.DTYPE).requires_grad_(not frozen[n]) for n in names}
    total, logits = dr.loss_and_grads(Engine(), W, tokens[0].to(a.device), targets[0].to(a.device), A, None, 0)
    if logits.shape[-1] != V:
        die(f"internal: the engine returned {logits.shape[-1]} logit columns, expected V = {V}")
    out = {"tokens": tokens, "targets": targets, "logits": logits.cpu().float(),
           "loss": total.reshape(1).cpu().float(), "losses": total.reshape(1).cpu().float()}
    for n in names:
        g = W[n].grad
        out["init." + n] = init[n].float()
        out["grad." + n] = (g if g is not None else torch.zeros_like(W[n])).detach().cpu().float()
    meta = {"name": cfg.get("name", ""), "engine": a.engine, "model": what, "src": os.path.basename(a.src) if a.src else f"seed {a.seed}",
            "dtype": "float64", "torch": torch.__version__}
    tmp = a.out + ".tmp"
    dr.write_safetensors(tmp, out, meta)
    os.replace(tmp, a.out)
    gnorm = sum(float((t.double() ** 2).sum()) for k, t in out.items() if k.startswith("grad.")) ** 0.5
    print(f"hf_golden: {cfg.get('name', '?')} by {what}: loss {float(total):.6f}, grad norm {gnorm:.6f}, "
          f"{len(names)} parameters -> {a.out}")


if __name__ == "__main__":
    main()
