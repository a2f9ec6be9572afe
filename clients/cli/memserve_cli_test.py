"""Tests of memserve-cli as a program: its command line, exit codes and error
lines, and every command against an in-process fake server (fake_server.py),
so no model is needed.

Run: bazel test //clients/cli:memserve_cli_test, or by hand after
`bazel build //clients/cli:memserve-cli //proto:memserve_py //proto:health_py`:
  PYTHONPATH=bazel-bin/proto /usr/bin/python3 clients/cli/memserve_cli_test.py \
      bazel-bin/clients/cli/memserve-cli
"""
import json
import os
import socket
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The generated modules (runfiles: <workspace>/proto) and fake_server.py.
sys.path.insert(0, os.path.join(ROOT, "proto"))
sys.path.insert(0, HERE)

from fake_server import FakeServer  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402
from memserve.v1 import memserve_pb2 as pb  # noqa: E402

CLI = None


def run(*args, stdin=None, server=None, timeout=60):
    cmd = [CLI] + (["--server", server] if server else []) + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)


class NotListening:
    """A localhost port bound but not listening: connecting is refused."""

    def __enter__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


class CommandLineTest(unittest.TestCase):

    def test_help_exits_0_and_lists_commands_and_flags(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ["generate", "chat", "tokenize", "info", "health", "--server", "--timeout"]:
            self.assertIn(word, r.stdout)

    def test_usage_errors_exit_2_with_one_line(self):
        cases = [
            ([], "no command given"),
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["--no_such_flag", "info"], "no_such_flag"),
            (["--max_tokens", "many", "generate"], "max_tokens"),
            (["generate"], "generate needs --prompt TEXT"),
            (["generate", "--prompt", "x", "--output", "xml"], "--output must be text or jsonl"),
            (["generate", "--prompt", "x", "--stop", "a,,b"], "--stop: empty stop string"),
            (["generate", "--prompt", "x", "--stop_token_ids", "1,x"], "--stop_token_ids"),
            (["tokenize"], "tokenize takes one argument"),
            (["detokenize", "1", "two"], "not an integer: 'two'"),
            (["info", "extra"], "unexpected argument 'extra'"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                # Nothing listens at port 1: none of these may try to connect.
                r = run(*args, server="127.0.0.1:1")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(message, r.stderr)
                self.assertEqual(r.stdout, "")

    def test_server_down_exits_3_quickly_with_a_clear_line(self):
        with NotListening() as address:
            for args in [["status"], ["info"], ["health"], ["generate", "--prompt", "hi"],
                         ["chat", "--message", "hi"], ["tokenize", "hi"]]:
                with self.subTest(args=args):
                    start = time.monotonic()
                    r = run(*args, server=address)
                    self.assertLess(time.monotonic() - start, 4.0)
                    self.assertEqual(r.returncode, 3, r.stderr)
                    lines = r.stderr.strip().splitlines()
                    self.assertEqual(len(lines), 1, r.stderr)
                    self.assertTrue(lines[0].startswith(
                        "memserve-cli: cannot reach server at %s (UNAVAILABLE: " % address),
                        lines[0])
                    self.assertEqual(r.stdout, "")


class FakeServerTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeServer()

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()

    def setUp(self):
        self.fake.memserve.requests.clear()
        self.fake.memserve.loading = False
        self.fake.health.status[""] = health_pb2.HealthCheckResponse.SERVING
        self.fake.health.status["memserve.v1.MemServe"] = health_pb2.HealthCheckResponse.SERVING

    def cli(self, *args, stdin=None):
        return run(*args, stdin=stdin, server=self.fake.address)

    def last_request(self):
        return self.fake.memserve.requests[-1]

    def chat_requests(self):
        """The Chat calls (chat also tokenizes each message, to fit the context)."""
        return [q for q in self.fake.memserve.requests if isinstance(q, pb.ChatRequest)]

    def test_generate_streams_text_and_prints_a_summary(self):
        r = self.cli("generate", "--prompt", "Hi", "--temperature", "0", "--max_tokens", "5",
                     "--stop", "a\\,b,\\n", "--seed", "7", "--request_id", "t-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "Hello\n")
        self.assertIn("finish=EOS prompt_tokens=3 completion_tokens=5", r.stderr)
        self.assertIn("request_id=t-1", r.stderr)
        req = self.last_request()
        self.assertEqual(req.text, "Hi")
        s = req.sampling
        self.assertTrue(s.HasField("temperature"))
        self.assertEqual(s.temperature, 0.0)
        self.assertFalse(s.HasField("top_p"))
        self.assertFalse(s.HasField("repetition_penalty"))
        self.assertEqual(s.seed, 7)
        self.assertEqual(s.max_tokens, 5)
        self.assertEqual(list(s.stop), ["a,b", "\n"])
        self.assertEqual(req.request_id, "t-1")

    def test_generate_unset_flags_leave_fields_unset(self):
        r = self.cli("generate", "--prompt", "Hi", "--nosummary")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "Hello world\n")
        self.assertEqual(r.stderr, "")
        s = self.last_request().sampling
        for field in ["top_p", "repetition_penalty", "seed", "max_tokens"]:
            self.assertFalse(s.HasField(field), field)
        # Greedy unless --temperature says otherwise, as `memserve generate`.
        self.assertTrue(s.HasField("temperature"))
        self.assertEqual(s.temperature, 0.0)

    def test_generate_jsonl(self):
        r = self.cli("generate", "--prompt", "Hi", "--max_tokens", "3", "--logprobs", "2",
                     "--ignore_eos", "--output", "jsonl")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual(len(lines), 4)
        self.assertEqual([t["text"] for t in lines[:3]], ["H", "e", "l"])
        self.assertEqual(lines[0]["id"], ord("H"))
        self.assertEqual(len(lines[0]["top"]), 2)
        self.assertEqual(lines[0]["top"][1], {"id": ord("I"), "logprob": -1.25, "text": "I"})
        self.assertEqual(lines[-1], {"finish_reason": "length", "text": "",
                                     "usage": {"prompt_tokens": 3, "completion_tokens": 3}})
        self.assertTrue(self.last_request().sampling.ignore_eos)

    def test_generate_prompt_from_stdin(self):
        r = self.cli("generate", "--prompt", "-", "--max_tokens", "1", stdin="from stdin\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.last_request().text, "from stdin\n")

    def test_invalid_argument_exits_2_with_the_servers_message(self):
        r = self.cli("generate", "--prompt", "Hi", "--top_p", "0")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.strip(),
                         "memserve-cli: INVALID_ARGUMENT: sampling.top_p must be in (0, 1], got 0")

    def test_stream_failure_keeps_partial_output_and_exits_1(self):
        r = self.cli("generate", "--prompt", "fail:3")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, "Hel\n")
        self.assertIn("memserve-cli: INTERNAL: fake failure after 3 tokens", r.stderr)

    def test_unavailable_from_the_server_exits_3(self):
        self.fake.memserve.loading = True
        r = self.cli("info")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stderr.strip(), "memserve-cli: UNAVAILABLE: the model is loading")

    def test_chat_keeps_history_until_exit(self):
        r = self.cli("chat", "--system", "Be brief.", "--temperature", "0",
                     stdin="hi\n\nhow are you?\n/exit\nnot sent\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "reply 2\nreply 4\n")
        self.assertNotIn("> ", r.stderr)  # stdin is not a terminal
        reqs = self.chat_requests()
        self.assertEqual(len(reqs), 2)
        self.assertEqual([(m.role, m.content) for m in reqs[1].messages],
                         [("system", "Be brief."), ("user", "hi"), ("assistant", "reply 2"),
                          ("user", "how are you?")])
        self.assertEqual(reqs[1].sampling.temperature, 0.0)

    def test_chat_ends_at_eof(self):
        r = self.cli("chat", "--nosummary", stdin="one\ntwo")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "reply 1\nreply 3\n")

    def test_chat_error_exits_with_its_code_when_not_interactive(self):
        r = self.cli("chat", "--top_p", "0", stdin="hi\n")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("INVALID_ARGUMENT", r.stderr)

    def test_chat_one_message(self):
        r = self.cli("chat", "--message", "hello", "--output", "jsonl")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual("".join(line["text"] for line in lines), "reply 1")
        self.assertEqual(lines[-1]["finish_reason"], "eos")
        self.assertEqual([m.role for m in self.chat_requests()[-1].messages], ["user"])

    def test_tokenize(self):
        r = self.cli("tokenize", "Hi")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "1 75 108\n")
        self.assertFalse(self.last_request().HasField("add_bos"))

        r = self.cli("tokenize", "a\n", "--no_bos", "--bytes")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, '100\t"a"\n13\t"\\n"\n')
        req = self.last_request()
        self.assertTrue(req.HasField("add_bos"))
        self.assertFalse(req.add_bos)
        self.assertTrue(req.return_token_bytes)

        r = self.cli("tokenize", "", "--output", "json", "--bytes")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), {"token_ids": [1], "token_bytes": [""]})

    def test_detokenize(self):
        r = self.cli("detokenize", "75", "108")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "Hi\n")
        r = self.cli("detokenize", "75", "1000")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("token_ids[1]", r.stderr)

    def test_info_text_and_json(self):
        r = self.cli("info")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = dict(line.split(None, 1) if " " in line else (line, "")
                    for line in r.stdout.splitlines())
        self.assertEqual(rows["model_name"], "fake")
        self.assertEqual(rows["memory.layers"], "1")
        self.assertEqual(rows["memory.placement"], "cpu-mmap")
        self.assertEqual(rows["limits.max_logprobs"], "20")
        self.assertEqual(rows["sliding_window"], "0")
        r = self.cli("info", "--output", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual(info["tokenizer"]["kind"], "bytes")
        self.assertEqual(info["memory"]["k_dim"], 32)

    def test_status(self):
        r = self.cli("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(^|\n)state +SERVING_STATE_SERVING\n")
        self.assertRegex(r.stdout, r"\nversion +0.0.0-fake\n")
        r = self.cli("status", "--output", "json")
        self.assertEqual(json.loads(r.stdout)["kv_blocks_total"], 100)

    def test_health(self):
        r = self.cli("health")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], r'^liveness +"" +SERVING$')
        self.assertRegex(lines[1], r'^readiness +"memserve.v1.MemServe" +SERVING$')

        self.fake.health.status["memserve.v1.MemServe"] = \
            health_pb2.HealthCheckResponse.NOT_SERVING
        r = self.cli("health")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stdout, r'readiness +"memserve.v1.MemServe" +NOT_SERVING')

        r = self.cli("health", "--service", "liveness")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.splitlines()), 1)

        r = self.cli("health", "--service", "no.such.Service")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("SERVICE_UNKNOWN (NOT_FOUND)", r.stdout)

    def test_timeout_ends_the_call_with_deadline_exceeded(self):
        r = self.cli("generate", "--prompt", "slow", "--timeout", "200ms")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("memserve-cli: DEADLINE_EXCEEDED", r.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: memserve_cli_test.py PATH/TO/memserve-cli [unittest args]")
    CLI = os.path.abspath(sys.argv.pop(1))
    unittest.main()
