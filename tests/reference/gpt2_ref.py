#!/usr/bin/env python3
"""The GPT-2 golden writer, kept under its old name: a thin wrapper of decoder_ref.py.

    /usr/bin/python3 tests/reference/gpt2_ref.py out/config.json tests/golden/gpt2_tiny.safetensors \
        [--steps 10] [--seed 1234] [--device cpu|cuda] [--hf]

GPT-2 (learned positions, LayerNorm, causal MHA, GELU-tanh, tied head) is one configuration of the generalised
decoder in decoder_ref.py, which draws the initial weights and data in the same order as this file always did,
so tests/golden/gpt2_tiny.safetensors is reproduced (to float64 rounding). --hf compares the logits with
transformers' GPT2LMHeadModel (tests/reference/hf_crosscheck.py).

Also a module: read_safetensors / write_safetensors (tests/hf_check.py imports them from here).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decoder_ref import main, read_safetensors, write_safetensors  # noqa: E402,F401

if __name__ == "__main__":
    main(prog="gpt2_ref")
