"""memserve-loadgen against a real `memserve serve` on the demo model
(models/demo, a 128-token context), started by tests/e2e/harness.py.

Run: bazel test //clients/loadgen:loadgen_server_test, or by hand after
`bazel build //server:memserve //clients/loadgen:memserve-loadgen //proto:memserve_py
//proto:health_py`:
  /usr/bin/python3 clients/loadgen/loadgen_server_test.py --memserve bazel-bin/server/memserve \
      --loadgen bazel-bin/clients/loadgen/memserve-loadgen
"""
import json
import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402

LOADGEN = None
SRV = None
DEFAULT_PROMPT_TOKENS = len("The memory layer of this model") + 1  # bytes tokenizer + BOS


def setUpModule():
    global SRV
    SRV = harness.Server(name="loadgen").start()


def tearDownModule():
    SRV.stop()


def run(*args, timeout=300):
    cmd = [LOADGEN, "--server", "127.0.0.1:%d" % SRV.port] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


class ReadmeTest(unittest.TestCase):

    def test_readme_builds_every_binary_it_runs(self):
        # In each shell block with a `bazel build` line, every bazel-bin/PKG/NAME
        # run after it is one of the targets built (//PKG:NAME).
        with open(os.path.join(ROOT, "README.md")) as f:
            blocks = re.findall(r"```sh\n(.*?)```", f.read(), re.S)
        checked = []
        for block in blocks:
            built = set()
            for line in block.splitlines():
                if line.startswith("bazel build"):
                    built |= set(re.findall(r"//[\w/]+:[\w-]+", line))
                    continue
                for path in re.findall(r"bazel-bin/([\w/.-]+)", line):
                    if not built:
                        continue
                    pkg, name = path.rsplit("/", 1)
                    self.assertIn("//%s:%s" % (pkg, name), built, line)
                    checked.append(name)
        self.assertIn("memserve-loadgen", checked)


class LoadgenServerTest(unittest.TestCase):

    def test_readme_line_works_on_the_demo_model(self):
        # README: --streams 16 --requests 64, everything else default.
        out = os.path.join(harness.tmpdir("loadgen_"), "report.json")
        r = run("--streams", "16", "--requests", "64", "--json_out", out)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        context = SRV.model_info().max_seqlen
        picked = min(128, context - DEFAULT_PROMPT_TOKENS)
        self.assertIn("(context %d tokens), longest prompt %d tokens, max_tokens %d (picked to fit "
                      "the context)" % (context, DEFAULT_PROMPT_TOKENS, picked), r.stdout)
        self.assertIn("16 streams, 64 requests (64 ok, 0 failed)", r.stdout)
        with open(out) as f:
            report = json.load(f)
        self.assertEqual(report["errors"], {})
        self.assertEqual(report["completion_tokens"], 64 * picked)  # ignore_eos by default
        self.assertGreater(report["tokens_per_s"], 0)

    def test_max_tokens_that_cannot_fit_is_refused_before_any_call(self):
        served = SRV.status().requests_served
        r = run("--max_tokens", "128", "--requests", "4")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertEqual(
            r.stderr.strip(),
            "memserve-loadgen: --max_tokens 128 does not fit: the longest prompt is %d tokens and "
            "the model's context (max_seqlen) 128, so at most %d (see --help)" %
            (DEFAULT_PROMPT_TOKENS, 128 - DEFAULT_PROMPT_TOKENS))
        self.assertEqual(SRV.status().requests_served, served)

    def test_failed_warmup_stops_with_the_servers_message(self):
        r = run("--temperature", "-1", "--requests", "4", "--warmup", "2")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)  # INVALID_ARGUMENT
        self.assertIn("memserve-loadgen: warm-up failed: 2 of 2 call(s) failed, e.g. "
                      "INVALID_ARGUMENT: sampling.temperature", r.stderr)
        self.assertIn("nothing measured", r.stderr)
        self.assertNotIn("requests (", r.stdout)  # no report

    def test_failed_calls_are_not_throughput(self):
        out = os.path.join(harness.tmpdir("loadgen_"), "failed.json")
        r = run("--temperature", "-1", "--requests", "6", "--streams", "2", "--warmup", "0",
                "--json_out", out)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("2 streams, 6 requests (0 ok, 6 failed)", r.stdout)
        self.assertIn("decode throughput  0.0 tokens/s  (0.00 requests/s)", r.stdout)
        self.assertRegex(r.stdout, r'failed             6 x INVALID_ARGUMENT, e\.g\. '
                                   r'"sampling\.temperature[^"]*"')
        with open(out) as f:
            report = json.load(f)
        self.assertEqual(report["requests_per_s"], 0)
        self.assertEqual(report["tokens_per_s"], 0)
        self.assertEqual(report["errors"]["INVALID_ARGUMENT"]["count"], 6)
        self.assertIn("sampling.temperature", report["errors"]["INVALID_ARGUMENT"]["example"])


if __name__ == "__main__":
    LOADGEN = harness.take_path_arg("--loadgen")
    harness.main()
