#!/usr/bin/env python3
"""Hugging Face Qwen2 directories for the import/export tests, and a float64 Qwen2 forward pass over them.

    qwen2_hf.py make DIR [--layers 2 --hidden 64 --heads 4 --kv-heads 2 --inter 96 --vocab 300 --mpe 64
                          --theta 1e6 --eps 1e-6 --tie 0|1 --dtype f32|bf16|f16|f64 --shards N --seed S
                          --drop NAME --reshape NAME --model-type T --extra NAME]
    qwen2_hf.py shard FILE --vocab V --tokens N [--seed S]          an llm.c token shard (uint16)
    qwen2_hf.py logits DIR SHARD OUT.safetensors --batch B --seq T  what `runtime --logits` computes, in float64
    qwen2_hf.py compare REF.safetensors GOT.safetensors [--tol 1e-4]  relative L2 of the logits
    qwen2_hf.py same DIR_A DIR_B                                     every tensor equal, bit for bit, same dtype
    qwen2_hf.py tokdir DIR [--merges 300]                            a tiny Qwen2-style tokenizer directory
    qwen2_hf.py encode DIR TEXT                                      its ids of a text file (Qwen2 regex + BPE)

Written from the Qwen2 math (../../../shared/notes/models.md §1, §4 with P = 1; transformers' Qwen2ForCausalLM
conventions: Linear weights [out, in], q/k/v with bias, o without, RMSNorm x/√(mean x² + eps)·w, RoPE
half-split (rotate_half) with inv_freq θ^(−2i/d), query head h uses kv head ⌊h·Hkv/H⌋, SwiGLU
down(silu(gate)·up), untied lm_head unless tie_word_embeddings) — directly over the Hugging Face tensor names,
so it shares nothing with moonforge's name mapping. Needs torch (any version) and numpy; safetensors files are
read and written with struct + json (the safetensors package is not needed).

The weights `make` writes are spread wider than an init (matrices N(0, 1/in), embeddings N(0, 0.5²), norm
weights 1 + N(0, 0.1²), biases N(0, 0.1²)) so that a wrong row order, pairing or transpose moves the logits far
more than the tolerance; they are rounded to --dtype first, so the file holds exactly the values the
reference uses.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

ST = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None, "I32": np.int32, "I64": np.int64}
DT = {"f64": "F64", "f32": "F32", "f16": "F16", "bf16": "BF16"}
TORCH_DT = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def fail(msg):
    print(f"qwen2_hf: {msg}", file=sys.stderr)
    sys.exit(1)


# ----------------------------------------------------------------------------------------------
# safetensors with struct + json: raw bytes per tensor, so bf16 round-trips without numpy bf16

def tensor_bytes(t, st):
    """torch tensor -> little-endian bytes of dtype st."""
    t = t.detach().cpu().contiguous()
    if st == "BF16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    return t.to(TORCH_DT[st]).numpy().tobytes()


def write_st(path, tensors, meta=None):
    """tensors: name -> (dtype, shape, bytes)."""
    header, off, blobs = {}, 0, []
    for name in sorted(tensors):
        st, shape, raw = tensors[name]
        header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = dict(meta or {"format": "pt"})
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_st(path):
    """name -> (dtype, shape, bytes)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    return {k: (v["dtype"], tuple(v["shape"]), data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}


def to_tensor(st, shape, raw):
    """float64 tensor of the stored values."""
    if st == "BF16":
        a = np.frombuffer(raw, dtype=np.int16).copy()
        return torch.from_numpy(a).view(torch.bfloat16).to(torch.float64).reshape(shape)
    return torch.from_numpy(np.frombuffer(raw, dtype=ST[st]).astype(np.float64)).reshape(shape)


def read_dir(d):
    """All tensors of a Hugging Face directory (single file or sharded): name -> (dtype, shape, bytes)."""
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        return read_st(single)
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        wm = json.load(f)["weight_map"]
    out = {}
    for fn in sorted(set(wm.values())):
        out.update(read_st(os.path.join(d, fn)))
    return out


# ----------------------------------------------------------------------------------------------
# a random Qwen2 directory

def hf_shapes(c):
    D, F, V, H, Hkv = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = D // H
    s = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        s.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                  p + "self_attn.q_proj.weight": (H * d, D), p + "self_attn.q_proj.bias": (H * d,),
                  p + "self_attn.k_proj.weight": (Hkv * d, D), p + "self_attn.k_proj.bias": (Hkv * d,),
                  p + "self_attn.v_proj.weight": (Hkv * d, D), p + "self_attn.v_proj.bias": (Hkv * d,),
                  p + "self_attn.o_proj.weight": (D, H * d), p + "mlp.gate_proj.weight": (F, D),
                  p + "mlp.up_proj.weight": (F, D), p + "mlp.down_proj.weight": (D, F)})
    if not c["tie_word_embeddings"]:
        s["lm_head.weight"] = (V, D)
    return s


def spread(name, shape, g):
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
        return 1.0 + 0.1 * r
    if name.endswith(".bias"):
        return 0.1 * r
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return 0.5 * r
    return r / math.sqrt(shape[1])


def make(a):
    c = {"architectures": ["Qwen2ForCausalLM"], "model_type": a.model_type, "hidden_size": a.hidden,
         "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
         "intermediate_size": a.inter, "vocab_size": a.vocab, "max_position_embeddings": a.mpe,
         "rope_theta": a.theta, "rms_norm_eps": a.eps, "tie_word_embeddings": bool(a.tie), "hidden_act": "silu",
         "use_sliding_window": False, "sliding_window": None, "attention_dropout": 0.0,
         "torch_dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64"}[a.dtype]}
    st = DT[a.dtype]
    g = torch.Generator().manual_seed(a.seed)
    tensors = {}
    for name, shape in hf_shapes(c).items():
        t = spread(name, shape, g)
        if name in a.reshape:
            shape = (shape[0] + 1,) + tuple(shape[1:])
            t = torch.cat([t, t[:1]])
        if name in a.drop:
            continue
        tensors[name] = (st, shape, tensor_bytes(t, st))
    for name in a.extra:
        tensors[name] = (st, (4,), tensor_bytes(torch.ones(4), st))
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    names = sorted(tensors)
    if a.shards <= 1:
        write_st(os.path.join(a.dir, "model.safetensors"), tensors)
        return
    per = -(-len(names) // a.shards)
    wm = {}
    for i in range(a.shards):
        fn = f"model-{i + 1:05d}-of-{a.shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i * per:(i + 1) * per]}
        write_st(os.path.join(a.dir, fn), part)
        wm.update({n: fn for n in part})
    with open(os.path.join(a.dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(len(t[2]) for t in tensors.values())}, "weight_map": wm}, f, indent=2)


# ----------------------------------------------------------------------------------------------
# the float64 forward pass over Hugging Face names

def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_half(x, theta):
    """x [B, h, T, d]: pairs (i, i + d/2) rotated by t·θ^(−2i/d) (transformers' rotate_half convention)."""
    T, d = x.shape[-2], x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
    rot = torch.cat((-x[..., d // 2:], x[..., :d // 2]), -1)
    return x * cos + rot * sin


def forward(c, W, tokens):
    """config dict, float64 weights by HF name, tokens [B, T] -> logits [B, T, V]."""
    D, H, Hkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d, eps, theta = D // H, c["rms_norm_eps"], c["rope_theta"]
    B, T = tokens.shape
    x = W["model.embed_tokens.weight"][tokens.long()]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    kv_of = torch.tensor([h * Hkv // H for h in range(H)])
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)

        def proj(n, heads):
            y = h @ W[p + f"self_attn.{n}_proj.weight"].t() + W[p + f"self_attn.{n}_proj.bias"]
            return y.view(B, T, heads, d).transpose(1, 2)
        q, k, v = rope_half(proj("q", H), theta), rope_half(proj("k", Hkv), theta), proj("v", Hkv)
        k, v = k.index_select(1, kv_of), v.index_select(1, kv_of)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        a = torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v
        x = x + a.transpose(1, 2).reshape(B, T, H * d) @ W[p + "self_attn.o_proj.weight"].t()
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        g, u = h @ W[p + "mlp.gate_proj.weight"].t(), h @ W[p + "mlp.up_proj.weight"].t()
        x = x + (g * torch.sigmoid(g) * u) @ W[p + "mlp.down_proj.weight"].t()
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if c["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.t()


def read_shard(path):
    with open(path, "rb") as f:
        raw = f.read()
    hdr = struct.unpack("<256i", raw[:1024])
    if hdr[0] != 20240520:
        fail(f"{path}: not a uint16 llm.c shard")
    return torch.from_numpy(np.frombuffer(raw[1024:], dtype=np.uint16).astype(np.int64))[:hdr[2]]


def logits(a):
    with open(os.path.join(a.dir, "config.json")) as f:
        c = json.load(f)
    W = {n: to_tensor(*v) for n, v in read_dir(a.dir).items()}
    ids = read_shard(a.shard)
    BT = a.batch * a.seq
    tokens = ids[:BT].view(a.batch, a.seq)
    with torch.no_grad():
        lg = forward(c, W, tokens)
    write_st(a.out, {"logits": ("F64", tuple(lg.shape), lg.numpy().tobytes())})


def compare(a):
    ref, got = read_st(a.ref)["logits"], read_st(a.got)["logits"]
    r, g = to_tensor(*ref), to_tensor(*got)
    if r.shape != g.shape:
        fail(f"logits shapes differ: reference {tuple(r.shape)}, {a.got} {tuple(g.shape)}")
    rel = float((g - r).norm() / r.norm())
    ok = rel <= a.tol
    print(f"qwen2_hf: logits relative L2 {rel:.3e} ({'ok' if ok else 'FAIL'}, tolerance {a.tol:g})")
    sys.exit(0 if ok else 1)


def same(a):
    A, B = read_dir(a.a), read_dir(a.b)
    if set(A) != set(B):
        fail(f"tensor names differ: only in {a.a}: {sorted(set(A) - set(B))[:4]}, only in {a.b}: {sorted(set(B) - set(A))[:4]}")
    for n in sorted(A):
        if A[n][:2] != B[n][:2]:
            fail(f"{n}: {A[n][0]} {A[n][1]} in {a.a}, {B[n][0]} {B[n][1]} in {a.b}")
        if A[n][2] != B[n][2]:
            fail(f"{n}: the bytes differ")
    print(f"qwen2_hf: {len(A)} tensors equal bit for bit ({a.a} = {a.b})")


def shard(a):
    g = torch.Generator().manual_seed(a.seed)
    toks = torch.randint(0, a.vocab, (a.tokens,), generator=g).numpy().astype(np.uint16)
    hdr = [0] * 256
    hdr[0], hdr[1], hdr[2] = 20240520, 1, a.tokens
    with open(a.file, "wb") as f:
        f.write(struct.pack("<256i", *hdr))
        f.write(toks.tobytes())


# ----------------------------------------------------------------------------------------------
# a tiny Qwen2-style tokenizer (vocab.json + merges.txt + tokenizer_config.json) and a reference encoder

def bytes_to_unicode():
    """GPT-2's byte alphabet: printable bytes stand for themselves, the other 68 for U+0100 + n."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    m, n = {}, 0
    for b in range(256):
        if b in keep:
            m[b] = chr(b)
        else:
            m[b] = chr(256 + n)
            n += 1
    return m


# Qwen2's pre-tokenisation regex in Python's re (\p{L} = [^\W\d_], \p{N} = \d: equal on the test texts, which
# hold no numerals outside Nd and no letters outside \w)
QWEN2_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d| ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

TOK_TRAIN = ("The quick brown fox jumps over the lazy dog. It's 2024; numbers 1234567890 and 3.14159!\n\n"
             "DON'T stop -- (hello) [world] {x}... café naïve 中文字 über 12ab34 a   b\tc\r\n") * 3


def bpe_encode(piece, ranks, tok_id):
    """encoder.py's BPE of one piece (bytes): merge the lowest-rank adjacent pair everywhere, repeat."""
    word = [bytes([b]) for b in piece]
    while len(word) > 1:
        pairs = [(ranks.get((word[i], word[i + 1])), i) for i in range(len(word) - 1)]
        best = min((r for r, _ in pairs if r is not None), default=None)
        if best is None:
            break
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and ranks.get((word[i], word[i + 1])) == best:
                out.append(word[i] + word[i + 1])
                i += 2
            else:
                out.append(word[i])
                i += 1
        word = out
    return [tok_id[w] for w in word]


def tokdir(a):
    """Merges learnt on whitespace-split words (coarser than Qwen2's pieces, so that some cross its
    boundaries: digit pairs, punctuation + letters, newlines), 300 of them, ids after the 256 bytes."""
    import collections
    words = collections.Counter(w.encode() for w in TOK_TRAIN.split(" ") if w)
    seqs = {w: [bytes([b]) for b in w] for w in words}
    merges = []
    for _ in range(a.merges):
        pc = collections.Counter()
        for w, sq in seqs.items():
            for i in range(len(sq) - 1):
                pc[(sq[i], sq[i + 1])] += words[w]
        if not pc:
            break
        (x, y), _ = max(pc.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((x, y))
        for w, sq in seqs.items():
            out, i = [], 0
            while i < len(sq):
                if i + 1 < len(sq) and sq[i] == x and sq[i + 1] == y:
                    out.append(x + y)
                    i += 2
                else:
                    out.append(sq[i])
                    i += 1
            seqs[w] = out
    b2u = bytes_to_unicode()
    spell = lambda t: "".join(b2u[b] for b in t)  # noqa: E731
    vocab = {spell(bytes([b])): b for b in range(256)}
    for x, y in merges:
        vocab.setdefault(spell(x + y), len(vocab))
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(a.dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{spell(x)} {spell(y)}\n" for x, y in merges))
    n = len(vocab)
    special = {str(n + i): {"content": c, "special": True} for i, c in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])}
    with open(os.path.join(a.dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "added_tokens_decoder": special}, f, indent=1)


def load_tok(d):
    import re
    u2b = {u: b for b, u in bytes_to_unicode().items()}
    unspell = lambda s: bytes(u2b[c] for c in s)  # noqa: E731
    with open(os.path.join(d, "vocab.json"), encoding="utf-8") as f:
        tok_id = {unspell(k): v for k, v in json.load(f).items()}
    ranks = {}
    with open(os.path.join(d, "merges.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#version") or not line.strip():
                continue
            x, y = line.split()
            ranks[(unspell(x), unspell(y))] = len(ranks)
    return re.compile(QWEN2_RE), ranks, tok_id


def encode(a):
    """The ids of a UTF-8 text file, one per line."""
    rx, ranks, tok_id = load_tok(a.dir)
    with open(a.text, encoding="utf-8", newline="") as f:  # keep \r\n as it is
        text = f.read()
    ids = [i for piece in rx.findall(text) for i in bpe_encode(piece.encode(), ranks, tok_id)]
    print("\n".join(map(str, ids)))


def greedy(a):
    """Greedy continuation in float64, printed as text: [<|endoftext|>] + encode(prompt), then n argmax tokens
    (the full forward over the sequence so far, each step), decoded with the directory's vocab.json — what
    `runtime --generate --temperature 0` must print after the prompt."""
    with open(os.path.join(a.dir, "config.json")) as f:
        c = json.load(f)
    W = {n: to_tensor(*v) for n, v in read_dir(a.dir).items()}
    rx, ranks, tok_id = load_tok(a.dir)
    with open(os.path.join(a.dir, "tokenizer_config.json")) as f:
        eot = int(next(k for k, v in json.load(f)["added_tokens_decoder"].items() if v["content"] == "<|endoftext|>"))
    ids = [eot] + [i for piece in rx.findall(a.prompt) for i in bpe_encode(piece.encode(), ranks, tok_id)]
    n0 = len(ids)
    with torch.no_grad():
        for _ in range(a.tokens):
            ids.append(int(forward(c, W, torch.tensor([ids]))[0, -1].argmax()))
    spelled = {v: k for k, v in tok_id.items()}
    sys.stdout.buffer.write(b"".join(spelled.get(i, b"") for i in ids[n0:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    for k, v in (("layers", 2), ("hidden", 64), ("heads", 4), ("kv-heads", 2), ("inter", 96), ("vocab", 300), ("mpe", 64),
                 ("tie", 0), ("shards", 1), ("seed", 1)):
        m.add_argument("--" + k, type=int, default=v)
    m.add_argument("--theta", type=float, default=1e6)
    m.add_argument("--eps", type=float, default=1e-6)
    m.add_argument("--dtype", choices=sorted(DT), default="bf16")
    m.add_argument("--model-type", default="qwen2")
    m.add_argument("--drop", action="append", default=[], help="leave this tensor out")
    m.add_argument("--reshape", action="append", default=[], help="give this tensor one row too many")
    m.add_argument("--extra", action="append", default=[], help="add a tensor of this name")
    s = sub.add_parser("shard")
    s.add_argument("file")
    s.add_argument("--vocab", type=int, required=True)
    s.add_argument("--tokens", type=int, required=True)
    s.add_argument("--seed", type=int, default=3)
    lg = sub.add_parser("logits")
    lg.add_argument("dir")
    lg.add_argument("shard")
    lg.add_argument("out")
    lg.add_argument("--batch", type=int, required=True)
    lg.add_argument("--seq", type=int, required=True)
    c = sub.add_parser("compare")
    c.add_argument("ref")
    c.add_argument("got")
    c.add_argument("--tol", type=float, default=1e-4)
    sm = sub.add_parser("same")
    sm.add_argument("a")
    sm.add_argument("b")
    td = sub.add_parser("tokdir")
    td.add_argument("dir")
    td.add_argument("--merges", type=int, default=300)
    en = sub.add_parser("encode")
    en.add_argument("dir")
    en.add_argument("text")
    gr = sub.add_parser("greedy")
    gr.add_argument("dir")
    gr.add_argument("prompt")
    gr.add_argument("--tokens", type=int, required=True)
    a = ap.parse_args()
    {"make": make, "shard": shard, "logits": logits, "compare": compare, "same": same, "tokdir": tokdir, "encode": encode,
     "greedy": greedy}[a.cmd](a)


if __name__ == "__main__":
    main()
