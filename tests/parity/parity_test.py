"""Parity: the C++ engine against the independent PyTorch reference.

For each model shape: make a random checkpoint in the training code's format
(tools/make_test_model.py), convert it (tools/convert_lingua.py), run the C++
engine (dump_model) and the reference (tests/reference/reference_model.py, which
reads the TRAINING checkpoint, so the converter is checked too) on random
tokens, and compare:
  - logits of the whole prompt, and of every step through the KV cache:
    relative error (max |cpp - ref| / max |ref|, per position) <= 1e-4;
  - memory top-k rows: identical wherever the reference's score gap between the
    k-th and (k+1)-th row is clear; scores within 1e-4;
  - greedy continuation: 32 identical tokens.
For the SentencePiece model, text prompts also go through the `memserve` binary itself (`memserve
generate --output jsonl`, greedy): its prompt token count and 32 greedy tokens must equal the
reference's continuation of the ids Python's sentencepiece gives the text. (dump_model takes ids
and does not link protobuf, so it missed that `memserve` aborted on every SentencePiece model.)

Run: /usr/bin/python3 tests/parity/parity_test.py --dump_model PATH --memserve PATH
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest
import zlib

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import make_test_model  # noqa: E402
from reference_model import ReferenceModel  # noqa: E402

DUMP_MODEL = None
MEMSERVE = None
REL_TOL = 1e-4
GAP_CLEAR = 1e-3
N_GREEDY = 32
# Text prompts for SentencePiece models: multi-byte characters, byte-fallback pieces (🦀 ∑ are not
# in make_test_model's corpus), digits split one by one, runs of spaces and a tab.
TEXT_PROMPTS = ["Zürich 日本語 😀 the memory layer 12345", "  two  spaces\tand 🦀 ∑ café"]

# name -> make_test_model keyword arguments (and converter flags).
SHAPES = {
    "dense": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, mem_layers=""),
    "memory_gqa": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mem_layers="1",
                       mem_n_keys=16, mem_heads=4, mem_knn=8, mem_k_dim=32),
    "gated": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, mem_layers="0", gated=True,
                  mem_n_keys=24, mem_heads=2, mem_knn=16, mem_k_dim=16),
    "v_dim_ne_dim": dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=1, mem_layers="1",
                         mem_v_dim=48, mem_n_keys=16, mem_heads=3, mem_knn=6, mem_k_dim=24),
    "shared_two_layers": dict(dim=96, n_layers=3, n_heads=6, n_kv_heads=2, mem_layers="0,2",
                              mem_n_keys=32, mem_heads=4, mem_knn=32, mem_k_dim=64),
    "unshared_tables": dict(dim=64, n_layers=3, n_heads=4, n_kv_heads=4, mem_layers="0,2",
                            share_values=False, mem_n_keys=16, mem_heads=2, mem_knn=8,
                            mem_k_dim=32),
    "no_swilu_sp": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, mem_layers="1",
                        swilu=False, mem_n_keys=16, mem_heads=4, mem_knn=8, mem_k_dim=32,
                        tokenizer="sp", rope_theta=500000.0, head_dim=32),
}


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


class ParityTest(unittest.TestCase):
    def run_shape(self, name, kwargs, dtype="float32"):
        tmp = tempfile.mkdtemp(prefix="parity_%s_" % name, dir=os.environ.get("TEST_TMPDIR"))
        ckpt, serve = os.path.join(tmp, "ckpt"), os.path.join(tmp, "serve")
        make_test_model.make_model(ckpt, seed=zlib.crc32(name.encode()) % 1000, **kwargs)
        if dtype == "bfloat16":
            # The reference reads the training checkpoint: round its dense
            # weights to bf16 so both sides see the same numbers.
            path = os.path.join(ckpt, "consolidated.pth")
            state = torch.load(path, map_location="cpu")
            for k, v in state["model"].items():
                if v.dtype == torch.float32:
                    state["model"][k] = v.to(torch.bfloat16).to(torch.float32)
            torch.save(state, path)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_lingua.py"),
                        ckpt, serve, "--dtype", dtype], check=True)
        ref = ReferenceModel.load(ckpt)
        vocab = json.load(open(os.path.join(serve, "config.json")))["vocab_size"]
        rng = random.Random(name)
        tokens = [rng.randrange(vocab) for _ in range(24)]
        prefix = 5
        out = os.path.join(tmp, "cpp.json")
        subprocess.run([DUMP_MODEL, "--model", serve, "--tokens", ",".join(map(str, tokens)),
                        "--prefix", str(prefix), "--greedy", str(N_GREEDY), "--out", out],
                       check=True)
        cpp = json.load(open(out))

        with torch.no_grad():
            ref_logits, ref_trace = ref.forward(tokens)
        cpp_prefill = torch.tensor(cpp["prefill_logits"])
        self.assertEqual(tuple(cpp_prefill.shape), tuple(ref_logits.shape))
        for t in range(len(tokens)):
            self.assertLessEqual(rel_err(cpp_prefill[t], ref_logits[t]), REL_TOL,
                                 "%s: prefill logits at position %d" % (name, t))
        steps = torch.tensor(cpp["step_logits"])
        self.assertEqual(steps.shape[0], len(tokens) - prefix + 1)
        for i in range(steps.shape[0]):
            t = prefix - 1 + i
            self.assertLessEqual(rel_err(steps[i], ref_logits[t]), REL_TOL,
                                 "%s: KV-cache decode logits at position %d" % (name, t))

        self.assertEqual(len(cpp["trace"]), len(ref_trace), name)
        clear = 0
        for ct, rt in zip(cpp["trace"], ref_trace):
            self.assertEqual(ct["layer"], rt["layer"])
            T, H, K = rt["indices"].shape
            idx = torch.tensor(ct["indices"]).reshape(T, H, K)
            sc = torch.tensor(ct["scores"]).reshape(T, H, K)
            for t in range(T):
                for h in range(H):
                    self.assertLessEqual(rel_err(sc[t, h], rt["scores"][t, h]), REL_TOL)
                    if rt["candidate_gap"][t, h] > GAP_CLEAR:
                        clear += 1
                        self.assertEqual(sorted(idx[t, h].tolist()),
                                         sorted(rt["indices"][t, h].tolist()),
                                         "%s layer %d token %d head %d" % (name, rt["layer"], t, h))
        if ref_trace:
            self.assertGreater(clear, 0, "no memory lookup had a clear gap; the test checks nothing")

        want = ref.greedy(tokens, N_GREEDY)
        self.assertEqual(cpp["greedy"], want, name + ": greedy continuation")

        if kwargs.get("tokenizer") == "sp":
            self.check_text_through_memserve(name, serve, ref)

    def check_text_through_memserve(self, name, serve, ref):
        """`memserve generate` on text: the binary tokenizes it as sentencepiece does and
        continues it as the reference does."""
        for text in TEXT_PROMPTS:
            r = subprocess.run([MEMSERVE, "generate", "--model", serve, "--prompt", text,
                                "--max_tokens", str(N_GREEDY), "--temperature", "0",
                                "--ignore_eos", "--output", "jsonl"],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, "%s: memserve generate %r: %s" %
                             (name, text, r.stderr[-2000:]))
            objs = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
            got, final = [o["id"] for o in objs[:-1]], objs[-1]
            ids = ref.encode(text)  # BOS + Python sentencepiece's ids
            self.assertEqual(final["usage"]["prompt_tokens"], len(ids), "%s: %r" % (name, text))
            self.assertEqual(got, ref.greedy(ids, N_GREEDY),
                             "%s: memserve's greedy continuation of %r" % (name, text))

    def test_dense(self):
        self.run_shape("dense", SHAPES["dense"])

    def test_memory_gqa(self):
        self.run_shape("memory_gqa", SHAPES["memory_gqa"])

    def test_gated(self):
        self.run_shape("gated", SHAPES["gated"])

    def test_v_dim_ne_dim(self):
        self.run_shape("v_dim_ne_dim", SHAPES["v_dim_ne_dim"])

    def test_shared_two_layers(self):
        self.run_shape("shared_two_layers", SHAPES["shared_two_layers"])

    def test_unshared_tables(self):
        self.run_shape("unshared_tables", SHAPES["unshared_tables"])

    def test_no_swilu_sentencepiece(self):
        self.run_shape("no_swilu_sp", SHAPES["no_swilu_sp"])

    def test_bf16_weights(self):
        self.run_shape("bf16", SHAPES["memory_gqa"], dtype="bfloat16")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dump_model", required=True)
    parser.add_argument("--memserve", required=True)
    args, rest = parser.parse_known_args()
    DUMP_MODEL = os.path.abspath(args.dump_model)
    MEMSERVE = os.path.abspath(args.memserve)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
