"""memserve-cli against a real `memserve serve` on the demo model (models/demo,
a 128-token context), started by tests/e2e/harness.py:
  - `generate --output jsonl` prints the very lines `memserve generate --output
    jsonl` prints for the same request (one shape, the same defaults);
  - `chat`: Ctrl-C (SIGINT) while a reply streams cancels that reply only, the
    next turn works and keeps the history; Ctrl-C at an empty prompt exits
    130; /reset, /help, /exit; a conversation longer than the context drops
    its oldest turns instead of failing; line editing at a terminal.

Run: bazel test //clients/cli:cli_server_test, or by hand after
`bazel build //server:memserve //clients/cli:memserve-cli //proto:memserve_py //proto:health_py`:
  /usr/bin/python3 clients/cli/cli_server_test.py --memserve bazel-bin/server/memserve \
      --cli bazel-bin/clients/cli/memserve-cli
"""
import json
import os
import subprocess
import sys
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402

CLI = None
SRV = None  # a server without artificial delays


def setUpModule():
    global SRV
    SRV = harness.Server(name="cli").start()


def tearDownModule():
    SRV.stop()


def cli(*args, server=None, stdin=None, timeout=120):
    cmd = [CLI, "--server", "127.0.0.1:%d" % (server or SRV).port] + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)


def memserve_generate(*args):
    cmd = [harness.memserve_binary(), "generate", "--model", harness.DEMO_MODEL] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class JsonlTest(unittest.TestCase):
    """One JSONL shape: the server-side and the client-side output agree line
    for line."""

    def check_same(self, *args):
        local = memserve_generate(*args, "--output", "jsonl")
        self.assertEqual(local.returncode, 0, local.stderr)
        remote = cli("generate", *args, "--output", "jsonl", "--nosummary")
        self.assertEqual(remote.returncode, 0, remote.stderr)
        self.assertEqual(remote.stdout.splitlines(), local.stdout.splitlines())
        return [json.loads(line) for line in local.stdout.splitlines()]

    def test_default_flags_give_the_same_lines(self):
        # No sampling flags: the same defaults (greedy; max_tokens as the
        # server's) in both programs.
        fact = harness.load_facts()[0]
        lines = self.check_same("--prompt", fact["prompt"])
        final = lines[-1]
        self.assertEqual(set(final), {"finish_reason", "text", "usage"})
        self.assertEqual(final["finish_reason"], "eos")
        text = "".join(line["text"] for line in lines)
        self.assertTrue(text.startswith(fact["answer"]), (text, fact))
        for token in lines[:-1]:
            self.assertEqual(set(token), {"id", "text", "logprob", "top"})
            self.assertEqual(token["top"], [])

    def test_logprobs_and_stop_string_give_the_same_lines(self):
        fact = harness.load_facts()[1]
        lines = self.check_same("--prompt", fact["prompt"], "--logprobs", "3",
                                "--stop", fact["answer"][2:4])
        final = lines[-1]
        self.assertEqual(final["finish_reason"], "stop")
        self.assertEqual(final["stop_string"], fact["answer"][2:4])
        for token in lines[:-1]:
            self.assertEqual(len(token["top"]), 3)
            for top in token["top"]:
                self.assertEqual(set(top), {"id", "logprob", "text"})
            self.assertEqual(token["top"][0]["id"], token["id"])  # greedy

    def test_length_limit_gives_the_same_lines(self):
        lines = self.check_same("--prompt", "x", "--max_tokens", "40", "--ignore_eos",
                                "--logprobs", "1")
        self.assertEqual(len(lines), 41)
        self.assertEqual(lines[-1]["finish_reason"], "length")
        self.assertEqual(lines[-1]["usage"], {"prompt_tokens": 2, "completion_tokens": 40})


if __name__ == "__main__":
    argv = harness.parse_args()
    if "--cli" in argv:
        i = argv.index("--cli")
        CLI = os.path.abspath(argv[i + 1])
        del argv[i:i + 2]
    if not CLI:
        sys.exit("usage: cli_server_test.py --memserve PATH --cli PATH [unittest args]")
    unittest.main(argv=argv, verbosity=2)
