"""Token bytes become text by one rule everywhere (docs/api.md, "From token bytes to text";
engine/tokenizer.h): every byte that is not part of a well-formed UTF-8 character becomes one
U+FFFD. Checked on a random-weight bytes model, whose sampled output is full of broken
characters, through Detokenize, the Generate text deltas, Complete, `memserve generate` (text and
jsonl) and `memserve-cli detokenize`.

Run: bazel test //tests/e2e:utf8_test, or by hand (see harness.py) with --cli PATH.
"""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import pb  # noqa: E402

sys.path.insert(0, os.path.join(harness.ROOT, "tools"))
import make_test_model  # noqa: E402

BOS, EOS = 256, 257
FFFD = "\ufffd"
CLI = None     # memserve-cli binary (--cli)
MODEL = None   # serving dir of the random test model
SRV = None
SEEDS = range(1, 9)
SAMPLING = dict(temperature=1.5, max_tokens=48, ignore_eos=True)


def expected_text(ids):
    """The rule, written independently of the engine: a token >= 256 (BOS, EOS) adds nothing
    and ends the byte run before it; within a run, the shortest slice that is one well-formed
    character (Python's strict decoder knows Unicode table 3-7) is that character, and a byte
    that starts none is one U+FFFD."""
    out, run = [], bytearray()
    for i in list(ids) + [EOS]:
        if i < 256:
            run.append(i)
            continue
        pos = 0
        while pos < len(run):
            for n in range(1, 5):
                try:
                    out.append(run[pos:pos + n].decode("utf-8"))
                    pos += n
                    break
                except UnicodeDecodeError:
                    pass
            else:
                out.append(FFFD)
                pos += 1
        run = bytearray()
    return "".join(out)


def setUpModule():
    global MODEL, SRV
    tmp = harness.tmpdir("utf8_")
    ckpt, MODEL = os.path.join(tmp, "ckpt"), os.path.join(tmp, "serve")
    make_test_model.make_model(ckpt, n_layers=2, mem_layers="1", seed=5)
    subprocess.run([sys.executable, os.path.join(harness.ROOT, "tools", "convert_lingua.py"),
                    ckpt, MODEL], check=True, stderr=subprocess.DEVNULL)
    SRV = harness.Server(model=MODEL, name="utf8").start()


def tearDownModule():
    if SRV is not None:
        rc = SRV.stop(timeout=30)
        assert rc == 0, "server exit code %s:\n%s" % (rc, SRV.stderr_tail(10))


class RuleTest(unittest.TestCase):
    CASES = [
        ([0xE6, 0x97, 0x41], FFFD * 2 + "A"),          # "日" cut after 2 of 3 bytes: one each
        ([0xE6, 0x97, 0xA5], "日"),
        ([0x61, 0xF0, 0x9F, 0x98], "a" + FFFD * 3),      # cut at the end of the ids
        ([0xED, 0xA0, 0x80], FFFD * 3),                 # a surrogate
        ([0xC0, 0xAF, 0x62], FFFD * 2 + "b"),           # an overlong "/"
        ([0xE6, EOS, 0x97, 0xA5], FFFD * 3),            # EOS breaks the character
        ([BOS, 0xF0, 0x9F, 0x98, 0x80, 0x80], "😀" + FFFD),
    ]

    def test_detokenize(self):
        for ids, want in self.CASES:
            self.assertEqual(expected_text(ids), want, ids)
            d = SRV.stub.Detokenize(pb.DetokenizeRequest(token_ids=ids), timeout=30)
            self.assertEqual(d.text, want, ids)

    def test_cli_detokenize(self):
        for ids, want in self.CASES:
            r = subprocess.run([CLI, "--server", "127.0.0.1:%d" % SRV.port, "detokenize"] +
                               [str(i) for i in ids], capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.decode("utf-8"), want + "\n", ids)


class GeneratedTextTest(unittest.TestCase):
    def test_server_streams_complete_and_detokenize_agree(self):
        broken = 0
        for seed in SEEDS:
            req = pb.GenerateRequest(text="Hi", sampling=pb.SamplingParams(seed=seed, **SAMPLING))
            ids, deltas, final = [], [], None
            for resp in SRV.stub.Generate(req, timeout=60):
                if resp.HasField("token"):
                    ids.append(resp.token.id)
                    deltas.append(resp.token.text)
                else:
                    final = resp.final
            text = "".join(deltas) + final.trailing_text
            self.assertEqual(text, expected_text(ids), seed)
            d = SRV.stub.Detokenize(pb.DetokenizeRequest(token_ids=ids), timeout=30)
            self.assertEqual(d.text, text, seed)
            c = SRV.stub.Complete(req, timeout=60)
            self.assertEqual(list(c.token_ids), ids, seed)
            self.assertEqual(c.text, text, seed)
            broken += FFFD in text
        self.assertGreater(broken, 0, "no sampled output had invalid UTF-8; the test tests nothing")

    def test_memserve_generate(self):
        broken = 0
        for seed in SEEDS:
            args = [harness.memserve_binary(), "generate", "--model", MODEL, "--prompt", "Hi",
                    "--seed", str(seed), "--temperature", str(SAMPLING["temperature"]),
                    "--max_tokens", str(SAMPLING["max_tokens"]), "--ignore_eos"]
            r = subprocess.run(args + ["--output", "jsonl"], capture_output=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = [json.loads(ln) for ln in r.stdout.decode("utf-8").splitlines()]
            tokens = [ln for ln in lines if "finish_reason" not in ln]
            final = [ln for ln in lines if "finish_reason" in ln]
            self.assertEqual(len(final), 1, lines[-1])
            ids = [t["id"] for t in tokens]
            text = "".join(t["text"] for t in tokens) + final[0]["text"]
            self.assertEqual(text, expected_text(ids), seed)
            r = subprocess.run(args, capture_output=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.decode("utf-8"), text + "\n", seed)
            broken += FFFD in text
        self.assertGreater(broken, 0, "no sampled output had invalid UTF-8; the test tests nothing")


if __name__ == "__main__":
    CLI = harness.take_path_arg("--cli", "clients/cli/memserve-cli")
    harness.main()
