#!/usr/bin/env python3
"""Hugging Face Qwen2 → moonforge → Hugging Face, checked against transformers (the GPU machine's check).

    python3 tests/reference/qwen2_roundtrip.py [--cpu-only] [--without-transformers] [--keep DIR] [--only CASE,...]

For each case a small random Qwen2ForCausalLM is saved with save_pretrained (no network), then
  1. bin/gen --import-hf DIR --write-spec W/CASE.lua -o W/CASE_out  (compiled with NVRTC unless --cpu-only)
  2. bin/runtime W/CASE_out/model.ptx --init-from DIR --logits TOKENS: the GPU's logits (bf16 activations) must
     be within relative L2 2e-2 of transformers' logits, the CPU backend's (--cpu, f32) within 1e-4;
     transformers runs the same weights in float64 with eager attention
  3. bin/runtime ... --init-from DIR --export-hf W/CASE_exp: every tensor equal to the saved one bit for bit (same
     dtype), and Qwen2ForCausalLM.from_pretrained(W/CASE_exp) gives the same logits as the original model
  4. when the spec schema has parscale.n: the same import with --set parscale.n=2 loads the backbone (CPU logits are
     finite and differ from P = 1) and --export-hf refuses it naming parscale.n
  5. the Qwen2 tokenizer: a tiny vocab.json + merges.txt (qwen2_hf.py tokdir); `runtime --prepare --tokenizer` must
     give the ids of transformers' Qwen2Tokenizer built from the same files, on text with several scripts
Weights are spread wider than transformers' init (random norm weights and q/k/v biases too), so a wrong row
order, pairing or bias would show. One line per check (ok / FAIL), a summary, exit status 1 on any failure.

--without-transformers: where transformers is not installed (the CPU test machine), the directories are made by
tests/reference/qwen2_hf.py and its float64 forward pass stands in for transformers: this checks the script and
the moonforge side, not transformers' reading of the files. --cpu-only: no GPU runs (and no NVRTC).
Run from the repository root after `make all`.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import qwen2_hf as Q  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
B, T = 2, 64
TOL_GPU, TOL_CPU = 2e-2, 1e-4

# name, config overrides, save dtype
CASES = [
    ("gqa_untied_bf16", dict(num_key_value_heads=2, tie_word_embeddings=False), "bf16"),
    ("mqa_tied_f32", dict(num_key_value_heads=1, tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-5), "f32"),
]
BASE = dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=128, rope_theta=1e6, rms_norm_eps=1e-6)

RESULTS = []


def report(name, ok, detail=""):
    RESULTS.append(ok)
    print(f"{'ok' if ok else 'FAIL'} - {name}{(': ' + detail) if detail else ''}", flush=True)
    return ok


def run(cmd, name):
    """Run a command; report a failure with its output's tail. Returns (ok, stdout+stderr)."""
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        tail = "\n".join("    " + line for line in p.stdout.strip().splitlines()[-15:])
        report(name, False, f"exit {p.returncode}: {' '.join(cmd)}\n{tail}")
        return False, p.stdout
    return True, p.stdout


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


# ----------------------------------------------------------------------------------------------
# the Hugging Face side

class HF:
    """Qwen2 directories and their logits: transformers, or qwen2_hf.py standing in for it."""

    def __init__(self, use_transformers, device):
        self.tf = None
        self.device = device
        if use_transformers:
            import transformers
            self.tf = transformers
            print(f"# torch {torch.__version__}, transformers {transformers.__version__}, reference on {device}")
        else:
            print("# without transformers: qwen2_hf.py makes the directories and computes the reference (float64)")

    def make(self, d, over, dtype, seed):
        c = dict(BASE, **over)
        if self.tf is None:
            a = argparse.Namespace(dir=d, layers=c["num_hidden_layers"], hidden=c["hidden_size"], heads=c["num_attention_heads"],
                                   kv_heads=c["num_key_value_heads"], inter=c["intermediate_size"], vocab=c["vocab_size"],
                                   mpe=c["max_position_embeddings"], tie=int(c["tie_word_embeddings"]), shards=1, seed=seed,
                                   theta=c["rope_theta"], eps=c["rms_norm_eps"], dtype=dtype, model_type="qwen2",
                                   drop=[], reshape=[], extra=[])
            Q.make(a)
            return
        tf = self.tf
        kw = dict(c, hidden_act="silu", use_sliding_window=False, attention_dropout=0.0, use_cache=False,
                  rope_parameters={"rope_type": "default", "rope_theta": float(c["rope_theta"])})
        try:
            cfg = tf.Qwen2Config(attn_implementation="eager", **kw)
        except TypeError:
            cfg = tf.Qwen2Config(**kw)
        model = tf.Qwen2ForCausalLM(cfg)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(Q.spread(n, tuple(p.shape), g).to(p.dtype))
        tdt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dtype]
        model.to(tdt).save_pretrained(d)

    def load(self, d):
        tf = self.tf
        for kw in (dict(dtype=torch.float64), dict(torch_dtype=torch.float64)):
            try:
                m = tf.Qwen2ForCausalLM.from_pretrained(d, attn_implementation="eager", **kw)
                break
            except TypeError:
                continue
        m = m.to(self.device).eval()
        if m.dtype != torch.float64:
            raise RuntimeError(f"{d}: from_pretrained gave {m.dtype}, expected float64")
        return m

    def logits(self, d, tokens):
        """float64 logits [B, T, V] of the directory's model on tokens [B, T]."""
        if self.tf is None:
            with open(os.path.join(d, "config.json")) as f:
                c = json.load(f)
            W = {n: Q.to_tensor(*v) for n, v in Q.read_dir(d).items()}
            with torch.no_grad():
                return Q.forward(c, W, tokens)
        m = self.load(d)
        with torch.no_grad():
            return m(input_ids=tokens.to(self.device)).logits.double().cpu()


def read_logits(path):
    return Q.to_tensor(*Q.read_st(path)["logits"])


# ----------------------------------------------------------------------------------------------

def schema_has_parscale():
    p = subprocess.run(["bin/gen", "specs/gpt2_tiny.lua", "--dump", "config", "--set", "parscale.n=1"], cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p.returncode == 0


def run_case(hf, name, over, dtype, w, shard, tokens, cpu_only, parscale):
    d = os.path.join(w, name)
    spec, out = os.path.join(w, name + ".lua"), os.path.join(w, name + "_out")
    try:
        hf.make(d, over, dtype, seed=len(name))
    except Exception as e:  # a transformers API difference fails this case, not the run
        report(f"{name}: make the Hugging Face directory", False, f"{type(e).__name__}: {e}")
        return
    sets = ["--set", f"train.batch_size={B}", "--set", f"model.seq_len={T}"]
    gen = ["bin/gen", "--import-hf", d, "--write-spec", spec, *sets, "-o", out] + (["--no-compile"] if cpu_only else [])
    ok, _ = run(gen, f"{name}: gen --import-hf")
    if not ok:
        return
    report(f"{name}: gen --import-hf {os.path.basename(d)} -> {os.path.basename(spec)}", True)
    ref = hf.logits(d, tokens)
    backends = [("cpu", ["--cpu"], TOL_CPU)] + ([] if cpu_only else [("gpu", [], TOL_GPU)])
    for be, flag, tol in backends:
        got_path = os.path.join(w, f"{name}_{be}.safetensors")
        ok, _ = run(["bin/runtime", os.path.join(out, "model.ptx"), *flag, "--init-from", d, "--logits", shard, "--out", got_path],
                    f"{name}: runtime --logits ({be})")
        if ok:
            got = read_logits(got_path)
            r = rel_l2(got, ref)
            report(f"{name}: {be} logits vs the reference, rel L2 {r:.2e} (tolerance {tol:g})", r <= tol)
    exp = os.path.join(w, name + "_exp")
    ok, _ = run(["bin/runtime", os.path.join(out, "model.ptx"), "--init-from", d, "--export-hf", exp], f"{name}: --export-hf")
    if ok:
        A, E = Q.read_dir(d), Q.read_dir(exp)
        tied = over.get("tie_word_embeddings", False)
        if tied:
            A.pop("lm_head.weight", None)  # a tied head may or may not be saved
        diff = sorted(set(A) ^ set(E)) + sorted(n for n in set(A) & set(E) if A[n] != E[n])
        report(f"{name}: exported tensors equal the saved ones bit for bit ({len(E)} tensors, {dtype})", not diff,
               f"differ: {diff[:4]}" if diff else "")
        try:
            r = rel_l2(hf.logits(exp, tokens), ref)
            report(f"{name}: Qwen2ForCausalLM.from_pretrained(export) gives the same logits, rel L2 {r:.1e}", r <= 1e-12)
        except Exception as e:
            report(f"{name}: from_pretrained(export)", False, f"{type(e).__name__}: {e}")
    if parscale:
        ps_spec, ps_out = os.path.join(w, name + "_p2.lua"), os.path.join(w, name + "_p2_out")
        ok, _ = run(["bin/gen", "--import-hf", d, "--write-spec", ps_spec, *sets, "--set", "parscale.n=2", "-o", ps_out, "--no-compile"],
                    f"{name}: gen --import-hf --set parscale.n=2")
        if ok:
            got_path = os.path.join(w, f"{name}_p2.safetensors")
            ok, _ = run(["bin/runtime", os.path.join(ps_out, "model.ptx"), "--cpu", "--init-from", d, "--logits", shard, "--out", got_path],
                        f"{name}: parscale.n=2 --init-from loads the backbone")
            if ok:
                got = read_logits(got_path)
                r = rel_l2(got, ref)
                report(f"{name}: parscale.n=2 logits finite and not P=1's (rel L2 {r:.2e})", bool(torch.isfinite(got).all()) and r > 1e-3)
            p = subprocess.run(["bin/runtime", os.path.join(ps_out, "model.ptx"), "--init-from", d, "--export-hf", exp + "_p2"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            report(f"{name}: parscale.n=2 --export-hf is refused naming parscale.n", p.returncode == 1 and "parscale.n" in p.stdout,
                   p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "")


TOK_TEXTS = [
    "It's DON'T you'LL 2024 abc123def (hello) ...world!\n\n\nfoo.\n\nbar  baz \t qux\r\nend  ",
    "café naïve 中文字 über_all __x Ωmega ДОМ дом 東京 ١٢٣ x² a\u00a0b  \n  end 3.14159 the lazy dog.",
]


def hf_tokenizer(d):
    """transformers' Qwen2 tokenizer over the directory, the way users load one (from_pretrained); the class's
    constructor arguments changed between major versions (v5 takes vocab/merges objects, and silently builds an
    empty vocabulary from vocab_file=), so a loader that encodes plain text to nothing is refused here rather
    than compared. Returns (tokenizer, None) or (None, why)."""
    import transformers
    tried = []
    for name, load in (("AutoTokenizer.from_pretrained", lambda: transformers.AutoTokenizer.from_pretrained(d)),
                       ("Qwen2Tokenizer.from_pretrained", lambda: transformers.Qwen2Tokenizer.from_pretrained(d)),
                       ("Qwen2Tokenizer(vocab=, merges=)", lambda: transformers.Qwen2Tokenizer(
                           vocab=json.load(open(os.path.join(d, "vocab.json"), encoding="utf-8")),
                           merges=[tuple(ln.split()) for ln in open(os.path.join(d, "merges.txt"), encoding="utf-8")
                                   if ln.strip() and not ln.startswith("#version")]))):
        try:
            tk = load()
        except Exception as e:  # noqa: BLE001 — the reason goes into the report
            tried.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if tk.encode("Doc 0: abc", add_special_tokens=False):
            return tk, None
        tried.append(f"{name}: encodes 'Doc 0: abc' as [] (vocabulary not loaded)")
    return None, f"transformers {transformers.__version__}: " + "; ".join(tried)


def tokenizer_check(use_transformers, w):
    d = os.path.join(w, "tok")
    Q.tokdir(argparse.Namespace(dir=d, merges=300))
    docs = [f"Doc {i}: {t}" for i, t in enumerate(TOK_TEXTS * 4)]
    with open(os.path.join(w, "docs.txt"), "w", encoding="utf-8", newline="") as f:
        f.write("".join(doc + "\n%\n" for doc in docs))
    if use_transformers:
        tk, why = hf_tokenizer(d)
        if tk is None:
            return report("tokenizer: transformers loads vocab.json + merges.txt", False, why)
        refs = [tk.encode(doc + "\n", add_special_tokens=False) for doc in docs]
    else:
        rx, ranks, tok_id = Q.load_tok(d)
        refs = [[i for p in rx.findall(doc + "\n") for i in Q.bpe_encode(p.encode(), ranks, tok_id)] for doc in docs[:4] if doc.isascii()]
        docs = [doc for doc in docs[:4] if doc.isascii()]
    out = os.path.join(w, "tok_shards")
    ok, _ = run(["bin/runtime", "--prepare", "--tokenizer", d, "--doc-sep", "%", "--val-fraction", "0.3", "--out", out,
                 os.path.join(w, "docs.txt")], "tokenizer: runtime --prepare")
    if not ok:
        return
    with open(os.path.join(d, "tokenizer_config.json")) as f:
        eot = int(next(k for k, v in json.load(f)["added_tokens_decoder"].items() if v["content"] == "<|endoftext|>"))
    got = []
    for fn in sorted(os.listdir(out)):
        if fn.endswith(".bin"):
            t = Q.read_shard(os.path.join(out, fn)).tolist()
            starts = [i for i, x in enumerate(t) if x == eot]
            got += [t[a + 1:b] for a, b in zip(starts, starts[1:] + [len(t)])]
    want = sorted(refs)
    if not use_transformers:
        got = [g for g in got if g in want]  # only the ASCII documents have a reference without transformers
    got = sorted(got)
    bad = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), None)
    report(f"tokenizer: {len(got)} documents encode as {'transformers Qwen2Tokenizer' if use_transformers else 'qwen2_hf.py'}",
           len(got) == len(want) and bad is None,
           "" if bad is None else f"first difference:\n    got  {got[bad]}\n    want {want[bad]}")


def main():
    ap = argparse.ArgumentParser(description="Qwen2 import/export against transformers")
    ap.add_argument("--cpu-only", action="store_true", help="no GPU runs, no NVRTC")
    ap.add_argument("--without-transformers", action="store_true", help="qwen2_hf.py stands in for transformers")
    ap.add_argument("--keep", default=None, help="work in this directory and keep it")
    ap.add_argument("--only", default="", help="comma-separated case names")
    a = ap.parse_args()
    if not a.without_transformers:
        try:
            import transformers  # noqa: F401
        except ImportError as e:
            report("transformers is importable", False, f"{e} (use --without-transformers on a machine without it)")
            sys.exit(1)
    for b in ("bin/gen", "bin/runtime"):
        if not os.path.exists(os.path.join(ROOT, b)):
            report(f"{b} exists", False, "run make all first")
            sys.exit(1)
    device = "cuda" if torch.cuda.is_available() and not a.cpu_only else "cpu"
    hf = HF(not a.without_transformers, device)
    w = a.keep or tempfile.mkdtemp(prefix="qwen2_roundtrip.")
    os.makedirs(w, exist_ok=True)
    shard = os.path.join(w, "tokens.bin")
    Q.shard(argparse.Namespace(file=shard, vocab=BASE["vocab_size"], tokens=B * T + 1, seed=3))
    tokens = Q.read_shard(shard)[:B * T].view(B, T)
    parscale = schema_has_parscale()
    if not parscale:
        print("# the spec schema has no parscale.n yet: the ParScale checks are left out")
    only = set(filter(None, a.only.split(",")))
    try:
        for name, over, dtype in CASES:
            if not only or name in only:
                run_case(hf, name, over, dtype, w, shard, tokens, a.cpu_only, parscale)
        if not only or "tokenizer" in only:
            tokenizer_check(not a.without_transformers, w)
    finally:
        if not a.keep:
            shutil.rmtree(w, ignore_errors=True)
    failed = RESULTS.count(False)
    print(f"qwen2_roundtrip: {len(RESULTS) - failed} ok, {failed} FAIL")
    sys.exit(1 if failed or not RESULTS else 0)


if __name__ == "__main__":
    main()
