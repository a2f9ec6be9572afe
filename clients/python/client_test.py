"""The memserve Python client against a real `memserve serve` (demo model):
generate (streaming), complete, chat, chat_stream, tokenize, detokenize,
info, status, health, errors as MemserveError, cancellation, and the example
chat script.

Run: bazel test //clients/python:client_test, or by hand:
  /usr/bin/python3 clients/python/client_test.py --memserve bazel-bin/server/memserve
"""
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, HERE)

import harness  # noqa: E402  (puts the generated stubs on sys.path)
import grpc  # noqa: E402
from memserve import Client, MemserveError, Token  # noqa: E402

CAPITAL = "The capital of Batourkor is"
ANSWER = " Draenddron."


class ClientTest(unittest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server("--debug_step_delay", "5ms", name="python_client").start()
        cls.address = "127.0.0.1:%d" % cls.srv.port
        cls.client = Client(cls.address, timeout=60)

    @classmethod
    def tearDownClass(cls):
        if cls.srv is not None:
            cls.client.close()
            rc = cls.srv.stop(timeout=30)
            if rc != 0:
                raise AssertionError("server exit code %s:\n%s" % (rc, cls.srv.stderr_tail()))

    def test_generate_streams_tokens(self):
        stream = self.client.generate(CAPITAL, max_tokens=20, temperature=0, logprobs=2,
                                      request_id="py-1")
        tokens = list(stream)
        self.assertTrue(all(isinstance(t, Token) for t in tokens))
        self.assertEqual(stream.text, ANSWER)
        self.assertEqual("".join(t.text for t in tokens) + stream.final.trailing_text, ANSWER)
        self.assertEqual(stream.final.finish_reason, "eos")
        self.assertEqual(stream.final.completion_tokens, len(tokens))
        self.assertEqual(stream.final.prompt_tokens, len(CAPITAL) + 1)
        self.assertEqual(stream.final.request_id, "py-1")
        self.assertEqual(len(tokens[0].top_logprobs), 2)
        self.assertEqual(tokens[0].text, " ")
        # complete() gives the same tokens.
        c = self.client.complete(CAPITAL, max_tokens=20, temperature=0)
        self.assertEqual(c.text, ANSWER)
        self.assertEqual(list(c.token_ids), [t.id for t in tokens])
        self.assertEqual(c.finish_reason, "eos")
        # Token ids as the prompt.
        ids = self.client.tokenize(CAPITAL)
        self.assertEqual(self.client.complete(ids, max_tokens=20, temperature=0).text, ANSWER)

    def test_chat(self):
        messages = [{"role": "user", "content": CAPITAL}]
        c = self.client.chat(messages, max_tokens=20, temperature=0)
        self.assertEqual(c.text, ANSWER)
        stream = self.client.chat_stream([("user", CAPITAL)], max_tokens=20, temperature=0)
        self.assertEqual("".join(t.text for t in stream), ANSWER)
        self.assertEqual(stream.final.completion_tokens, len(c.token_ids))

    def test_stop_string(self):
        c = self.client.complete(CAPITAL, max_tokens=20, temperature=0, stop=["dd"])
        self.assertEqual(c.text, " Draen")
        self.assertEqual((c.finish_reason, c.final.stop_string), ("stop", "dd"))

    def test_tokenizer_info_status_health(self):
        self.assertEqual(self.client.tokenize("Hi"), [256, ord("H"), ord("i")])
        self.assertEqual(self.client.tokenize("Hi", add_bos=False), [ord("H"), ord("i")])
        self.assertEqual(self.client.detokenize([256, ord("H"), ord("i"), 257]), "Hi")
        info = self.client.info()
        self.assertEqual(info.model_name, "demo")
        self.assertEqual(info.limits.max_logprobs, 20)
        self.assertEqual(self.client.status().state, harness.pb.SERVING_STATE_SERVING)
        self.assertTrue(self.client.health())
        self.assertTrue(self.client.health(ready=False))

    def test_errors_carry_code_and_message(self):
        with self.assertRaises(MemserveError) as cm:
            self.client.complete(CAPITAL, top_p=0)
        self.assertEqual(cm.exception.code, "INVALID_ARGUMENT")
        self.assertEqual(cm.exception.message, "sampling.top_p must be in (0, 1], got 0")
        with self.assertRaises(MemserveError) as cm:
            list(self.client.chat_stream([{"role": "bot", "content": "x"}]))
        self.assertEqual(cm.exception.code, "INVALID_ARGUMENT")
        self.assertIn("messages[0].role", cm.exception.message)
        with self.assertRaises(MemserveError) as cm:
            self.client.complete(CAPITAL, max_tokens=100, ignore_eos=True, timeout=0.05)
        self.assertEqual(cm.exception.code, "DEADLINE_EXCEEDED")
        unreachable = Client("127.0.0.1:1")
        with self.assertRaises(MemserveError) as cm:
            unreachable.health(timeout=2)
        self.assertEqual(cm.exception.code, "UNAVAILABLE")
        unreachable.close()
        self.srv.wait_idle(timeout=5)

    def test_cancel_frees_the_request(self):
        self.srv.wait_idle()
        stream = self.client.generate("Hi", max_tokens=100, temperature=0, ignore_eos=True)
        for i, _ in enumerate(stream):
            if i == 2:
                break
        self.assertEqual(self.client.status().running, 1)
        stream.cancel()
        self.srv.wait_idle(timeout=2)

    def test_example_chat_script(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        out = subprocess.run(
            [sys.executable, os.path.join(HERE, "examples", "chat.py"), "--server", self.address,
             "--max_tokens", "20"],
            input=CAPITAL + "\n" + "The ruler of Batourkor is\n", capture_output=True, text=True,
            env=env, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("Draenddron.", out.stdout)
        self.assertEqual(out.stdout.count("\n"), 2, out.stdout)
        self.assertIn("[eos,", out.stderr)


class ApiKeyTest(unittest.TestCase):
    """Client(api_key=...) against `memserve serve --api_keys_file`."""

    def test_api_key(self):
        keys = os.path.join(harness.tmpdir("client-keys-"), "keys.txt")
        with open(keys, "w") as f:
            f.write("py-client-key\n")
        with harness.Server("--api_keys_file", keys, name="python_client_keys") as srv:
            address = "127.0.0.1:%d" % srv.port
            with Client(address, timeout=60, api_key="py-client-key") as c:
                self.assertTrue(c.health())
                self.assertGreater(len(c.tokenize("Hi")), 0)
                self.assertEqual(c.status().version[:8], "memserve")
                self.assertGreater(len(c.complete("Hi", max_tokens=2, temperature=0).text), 0)
                self.assertGreater(len(list(c.generate("Hi", max_tokens=2, temperature=0))), 0)
            for key in (None, "wrong"):
                with Client(address, timeout=60, api_key=key) as c:
                    self.assertTrue(c.health())  # health is open
                    with self.assertRaises(MemserveError) as cm:
                        c.tokenize("Hi")
                    self.assertEqual(cm.exception.status, grpc.StatusCode.UNAUTHENTICATED)


if __name__ == "__main__":
    harness.main()
