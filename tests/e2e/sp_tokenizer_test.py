"""End-to-end: a model with a SentencePiece tokenizer served by `memserve serve` and driven by the
real `memserve-cli` binary (generate, chat, tokenize, detokenize, info), with token ids checked
against Python's sentencepiece (the reference implementation) for the same text.

Until memserve encoded SentencePiece itself, such a server aborted while loading the model (exit
134: Debian's libsentencepiece carries protobuf 3.14, memserve links protobuf 3.21).

Run: bazel test //tests/e2e:sp_tokenizer_test, or by hand (see harness.py):
  /usr/bin/python3 tests/e2e/sp_tokenizer_test.py --memserve bazel-bin/server/memserve \
      --memserve_cli bazel-bin/clients/cli/memserve-cli
"""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import pb, greedy  # noqa: E402

sys.path.insert(0, os.path.join(harness.ROOT, "tools"))
import make_test_model  # noqa: E402

import sentencepiece  # noqa: E402

CLI = None
SRV = None
MODEL = None
SP = None  # sentencepiece.SentencePieceProcessor of the served model
CONFIG = None

TEXTS = [
    "Zürich 日本語 😀",
    "Hello world",
    "the memory layer 12345 answers",
    "  two  spaces,\ttab\nnewline  ",
    "unseen: 中文 🦀 ∑ ж ﬁ",
    "<s> and </s> are text here",
    "x",
]


def setUpModule():
    global SRV, MODEL, SP, CONFIG
    tmp = harness.tmpdir("e2e_sp_model_")
    ckpt = os.path.join(tmp, "ckpt")
    MODEL = os.path.join(tmp, "serve")
    make_test_model.make_model(ckpt, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mem_layers="1",
                               mem_n_keys=16, mem_heads=2, mem_knn=8, mem_k_dim=32,
                               max_seqlen=256, seed=11, tokenizer="sp")
    subprocess.run([sys.executable, os.path.join(harness.ROOT, "tools", "convert_lingua.py"),
                    ckpt, MODEL], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(MODEL, "config.json")) as f:
        CONFIG = json.load(f)
    SP = sentencepiece.SentencePieceProcessor(model_file=os.path.join(MODEL, "tokenizer.model"))
    SRV = harness.Server(model=MODEL, name="sp").start()


def tearDownModule():
    if SRV is not None:
        rc = SRV.stop(timeout=30)
        print("server exit code %s; stderr tail:\n%s" % (rc, SRV.stderr_tail(10)))
        assert rc == 0, "server exit code %s" % rc


def cli(*args, stdin=None, timeout=120):
    """Runs memserve-cli against the server; returns the CompletedProcess (text mode)."""
    cmd = [CLI, "--server", "127.0.0.1:%d" % SRV.port, "--timeout", "60s"] + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)


def jsonl(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


class TokenizeTest(unittest.TestCase):
    def tokenize(self, text, *flags):
        r = cli("tokenize", text, "--output", "json", *flags)
        self.assertEqual(r.returncode, 0, "text=%r stderr=%r" % (text, r.stderr))
        return json.loads(r.stdout)["token_ids"]

    def test_ids_equal_python_sentencepiece(self):
        bos = CONFIG["tokenizer"]["bos_id"]
        for text in TEXTS:
            with self.subTest(text=text):
                want = SP.encode(text)
                self.assertEqual(self.tokenize(text), [bos] + want)
                self.assertEqual(self.tokenize(text, "--no_bos"), want)

    def test_round_trip_restores_the_text(self):
        # The test model normalizes nothing (identity, whitespace kept), so decoding the ids of
        # a text gives the text back.
        for text in TEXTS:
            with self.subTest(text=text):
                ids = self.tokenize(text)
                r = cli("detokenize", *map(str, ids), "--output", "json")
                self.assertEqual(r.returncode, 0, r.stderr)
                got = json.loads(r.stdout)["text"]
                self.assertEqual(got, SP.decode(ids[1:]))
                self.assertEqual(got, text)

    def test_byte_fallback_pieces_stream_whole_characters(self):
        text = "Zürich 🦀 ∑ ж"  # the last three are not in the training corpus
        r = cli("tokenize", text, "--no_bos", "--bytes", "--output", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        ids = json.loads(r.stdout)["token_ids"]
        pieces = [SP.id_to_piece(i) for i in ids]
        self.assertEqual(sum(SP.is_byte(i) for i in ids), 4 + 3 + 2, pieces)
        r = cli("detokenize", *map(str, ids))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, text + "\n")


class GenerateTest(unittest.TestCase):
    PROMPT = "Zürich 日本語 😀 the memory"

    def test_generate_jsonl_matches_the_server_and_sentencepiece(self):
        r = cli("generate", "--prompt", self.PROMPT, "--max_tokens", "12", "--temperature", "0",
                "--ignore_eos", "--output", "jsonl", "--nosummary")
        self.assertEqual(r.returncode, 0, r.stderr)
        objs = jsonl(r.stdout)
        tokens, final = objs[:-1], objs[-1]
        self.assertEqual(len(tokens), 12)
        self.assertEqual(final["usage"]["prompt_tokens"], 1 + len(SP.encode(self.PROMPT)))
        ids = [t["id"] for t in tokens]
        # The same greedy request over gRPC gives the same tokens and text.
        ref = SRV.stub.Complete(pb.GenerateRequest(text=self.PROMPT,
                                                   sampling=greedy(12, ignore_eos=True)),
                                timeout=60)
        self.assertEqual(list(ref.token_ids), ids)
        text = "".join(t["text"] for t in tokens) + final["text"]
        self.assertEqual(text, ref.text)
        self.assertEqual(text, SP.decode(ids))
        # Prompt ids as the server counted them: prompt + completion re-encode consistently.
        tok = SRV.stub.Tokenize(pb.TokenizeRequest(text=self.PROMPT), timeout=30)
        self.assertEqual(list(tok.token_ids)[1:], SP.encode(self.PROMPT))

    def test_generate_text(self):
        r = cli("generate", "--prompt", "Hello", "--max_tokens", "8", "--nosummary")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_chat_one_turn(self):
        r = cli("chat", "--message", "Grüß dich, 東京?", "--max_tokens", "8", "--temperature",
                "0", "--ignore_eos", "--nosummary")
        self.assertEqual(r.returncode, 0, r.stderr)
        ref = SRV.stub.ChatComplete(pb.ChatRequest(
            messages=[pb.ChatMessage(role="user", content="Grüß dich, 東京?")],
            sampling=greedy(8, ignore_eos=True)), timeout=60)
        self.assertEqual(r.stdout, ref.text + "\n")

    def test_info_names_the_sentencepiece_tokenizer(self):
        r = cli("info", "--output", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"sp"', r.stdout)

    def test_megabyte_prompt_is_rejected_quickly(self):
        prompt = ("Zürich 日本語 😀 " * 60000)[: 1 << 20]
        start = time.monotonic()
        r = cli("generate", "--prompt", "-", "--max_tokens", "4", "--nosummary", stdin=prompt)
        elapsed = time.monotonic() - start
        self.assertEqual(r.returncode, 2, "stdout=%r stderr=%r" % (r.stdout[:200], r.stderr))
        self.assertIn("max_seqlen", r.stderr)
        self.assertLess(elapsed, 20.0)
        # The server still answers.
        r = cli("tokenize", "Zürich", "--output", "json")
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    CLI = harness.take_path_arg("--memserve_cli", "clients/cli/memserve-cli")
    harness.main()
