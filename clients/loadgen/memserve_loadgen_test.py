"""Tests of memserve-loadgen as a program, against the in-process fake server
of //clients/cli (fake_server.py) and a port where nothing listens.

Run: bazel test //clients/loadgen:memserve_loadgen_test, or by hand after
`bazel build //clients/loadgen:memserve-loadgen //proto:memserve_py //proto:health_py`:
  PYTHONPATH=bazel-bin/proto /usr/bin/python3 clients/loadgen/memserve_loadgen_test.py \
      bazel-bin/clients/loadgen/memserve-loadgen
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "proto"))
sys.path.insert(0, os.path.join(ROOT, "clients", "cli"))

from fake_server import FakeServer  # noqa: E402
from memserve.v1 import memserve_pb2 as pb  # noqa: E402

LOADGEN = None
TMP = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp(prefix="loadgen_")


def run(*args, timeout=120):
    return subprocess.run([LOADGEN] + list(args), capture_output=True, text=True,
                          timeout=timeout)


class LoadgenTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeServer(workers=32)

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()

    def setUp(self):
        self.fake.memserve.requests.clear()

    def test_counts_tokens_and_writes_json(self):
        out = os.path.join(TMP, "report.json")
        r = run("--server", self.fake.address, "--streams", "4", "--requests", "12",
                "--max_tokens", "7", "--warmup", "2", "--json_out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("4 streams, 12 requests (12 ok, 0 failed)", r.stdout)
        self.assertIn("decode throughput", r.stdout)
        with open(out) as f:
            report = json.load(f)
        self.assertEqual(report["streams"], 4)
        self.assertEqual(report["requests"], 12)
        self.assertEqual(report["completion_tokens"], 12 * 7)  # ignore_eos by default
        self.assertGreater(report["wall_s"], 0)
        self.assertAlmostEqual(report["tokens_per_s"], 84 / report["wall_s"], delta=1e-6)
        for key in ["ttft_ms", "itl_ms"]:
            for p in ["p50", "p90", "p99"]:
                self.assertGreaterEqual(report[key][p], 0)
        self.assertEqual(report["itl_ms"]["count"], 12 * 6)
        self.assertEqual(report["errors"], {})
        reqs = [q for q in self.fake.memserve.requests if isinstance(q, pb.GenerateRequest)]
        self.assertEqual(len(reqs), 14)  # warmup included
        # The prompt's length was asked once, to check that max_tokens fits.
        tokenized = [q for q in self.fake.memserve.requests if isinstance(q, pb.TokenizeRequest)]
        self.assertEqual([q.text for q in tokenized], ["The memory layer of this model"])
        for req in reqs:
            self.assertEqual(req.sampling.max_tokens, 7)
            self.assertTrue(req.sampling.HasField("temperature"))
            self.assertEqual(req.sampling.temperature, 0.0)
            self.assertTrue(req.sampling.ignore_eos)
        ids = sorted(req.request_id for req in reqs)
        self.assertIn("loadgen-0", ids)
        self.assertIn("loadgen-warmup-1", ids)

    def test_errors_are_counted_by_code(self):
        prompts = os.path.join(TMP, "prompts.jsonl")
        with open(prompts, "w") as f:
            f.write('{"prompt": "ok"}\n{"prompt": "fail:2"}\n')
        out = os.path.join(TMP, "errors.json")
        r = run("--server", self.fake.address, "--streams", "2", "--requests", "6",
                "--max_tokens", "4", "--warmup", "0", "--prompts_file", prompts,
                "--json_out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out) as f:
            report = json.load(f)
        self.assertEqual(report["requests"], 6)
        self.assertEqual(report["ok"], 3)
        self.assertEqual(report["failed"], 3)
        self.assertEqual(report["errors"],
                         {"INTERNAL": {"count": 3, "example": "fake failure after 2 tokens"}})
        # 3 full calls of 4 tokens count; the 2 tokens each of the 3 failed
        # ones are reported apart.
        self.assertEqual(report["completion_tokens"], 3 * 4)
        self.assertEqual(report["failed_completion_tokens"], 3 * 2)
        self.assertAlmostEqual(report["requests_per_s"], 3 / report["wall_s"], delta=1e-6)
        self.assertIn('failed             3 x INTERNAL, e.g. "fake failure after 2 tokens"',
                      r.stdout)

    def test_duration_limits_the_run(self):
        r = run("--server", self.fake.address, "--streams", "2", "--duration", "300ms",
                "--prompt", "slow", "--max_tokens", "2", "--warmup", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"2 streams, \d+ requests")

    def test_server_down_exits_3(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        try:
            address = "127.0.0.1:%d" % sock.getsockname()[1]
            r = run("--server", address, "--requests", "1")
        finally:
            sock.close()
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertTrue(r.stderr.startswith(
            "memserve-loadgen: cannot reach server at %s (UNAVAILABLE: " % address), r.stderr)

    def test_usage_errors_exit_2(self):
        for args in [["--streams", "0"], ["--requests", "0"], ["--bogus"], ["extra"],
                     ["--prompts_file", os.path.join(TMP, "missing.jsonl")]]:
            with self.subTest(args=args):
                r = run("--server", "127.0.0.1:1", *args)
                self.assertEqual(r.returncode, 2, r.stderr)

    def test_help_exits_0(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--streams", r.stdout)
        self.assertIn("--json_out", r.stdout)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: memserve_loadgen_test.py PATH/TO/memserve-loadgen [unittest args]")
    LOADGEN = os.path.abspath(sys.argv.pop(1))
    unittest.main()
