"""End-to-end tests of API keys (`memserve serve --api_keys_file`,
docs/security.md "API keys") against the real server: every memserve.v1 RPC
with the right (plain and hashed) / wrong / missing key, health open without a
key, the HTTP API's /v1/ routes 401 without a key and 200 with one, the key
never in the server's log, bad key files refused at startup (exit 2, one line
naming the flag, the file and the line), and memserve-cli / memserve-bench --api_key.

Run: bazel test //tests/e2e:auth_test, or by hand (see harness.py) with --cli PATH --bench PATH.
"""
import hashlib
import http.client
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import harness  # noqa: E402
from harness import pb, greedy, health_pb2, DEMO_MODEL  # noqa: E402

PLAIN_KEY = "plain-Key_0123456789abcdef"
HASHED_KEY = "hashed-key-never-stored-in-clear"
WRONG_KEY = "plain-Key_0123456789abcdeX"
CLI = None  # memserve-cli (--cli)
BENCH = None  # memserve-bench (--bench)


def write_keys(directory, text, name="keys.txt"):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def key_file_text():
    return ("# memserve API keys\n\n%s\n  # the second one hashed\nsha256:%s\n" %
            (PLAIN_KEY, hashlib.sha256(HASHED_KEY.encode()).hexdigest()))


def bearer(key):
    return (("authorization", "Bearer " + key),)


# Every RPC of memserve.v1.MemServe (proto/memserve/v1/memserve.proto), as a
# function of (stub, metadata) that consumes the whole answer.
def _generate(stub, md):
    return list(stub.Generate(pb.GenerateRequest(text="Hi", sampling=greedy(2)), metadata=md,
                              timeout=60))


def _chat(stub, md):
    req = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="Hi")],
                         sampling=greedy(2))
    return list(stub.Chat(req, metadata=md, timeout=60))


RPCS = {
    "Generate": _generate,
    "Complete": lambda stub, md: stub.Complete(
        pb.GenerateRequest(text="Hi", sampling=greedy(2)), metadata=md, timeout=60),
    "Chat": _chat,
    "ChatComplete": lambda stub, md: stub.ChatComplete(
        pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="Hi")],
                       sampling=greedy(2)), metadata=md, timeout=60),
    "Tokenize": lambda stub, md: stub.Tokenize(pb.TokenizeRequest(text="Hi"), metadata=md,
                                               timeout=60),
    "Detokenize": lambda stub, md: stub.Detokenize(pb.DetokenizeRequest(token_ids=[5, 6]),
                                                   metadata=md, timeout=60),
    "GetModelInfo": lambda stub, md: stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=md,
                                                       timeout=60),
    "GetServerStatus": lambda stub, md: stub.GetServerStatus(pb.GetServerStatusRequest(),
                                                             metadata=md, timeout=60),
}


def http_request(port, method, path, body=None, key=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = "Bearer " + key
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw), resp
    finally:
        conn.close()


class ApiKeyTest(unittest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        d = harness.tmpdir("auth-")
        cls.srv = harness.Server("--api_keys_file", write_keys(d, key_file_text()), http=True)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_every_rpc_with_right_wrong_and_missing_key(self):
        # Every method of the service is covered here.
        methods = {m.name for m in pb.DESCRIPTOR.services_by_name["MemServe"].methods}
        self.assertEqual(methods, set(RPCS))
        for name, call in RPCS.items():
            for key in (PLAIN_KEY, HASHED_KEY):
                with self.subTest(rpc=name, key="right"):
                    call(self.srv.stub, bearer(key))  # raises on an error
            for what, md in (("wrong", bearer(WRONG_KEY)), ("missing", ()),
                             ("hash as key", bearer(
                                 "sha256:" + hashlib.sha256(HASHED_KEY.encode()).hexdigest())),
                             ("no scheme", (("authorization", PLAIN_KEY),))):
                with self.subTest(rpc=name, key=what):
                    with self.assertRaises(grpc.RpcError) as cm:
                        call(self.srv.stub, md)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                    self.assertIn("API key", cm.exception.details())
                    self.assertNotIn(WRONG_KEY, cm.exception.details())

    def test_refused_calls_never_reach_the_engine(self):
        before = self.srv.stub.GetServerStatus(pb.GetServerStatusRequest(),
                                               metadata=bearer(PLAIN_KEY), timeout=10)
        for name in ("Generate", "Complete", "Chat", "ChatComplete"):
            with self.assertRaises(grpc.RpcError):
                RPCS[name](self.srv.stub, bearer(WRONG_KEY))
        after = self.srv.stub.GetServerStatus(pb.GetServerStatusRequest(),
                                              metadata=bearer(PLAIN_KEY), timeout=10)
        self.assertEqual(after.requests_served, before.requests_served)

    def test_health_is_open(self):
        self.assertEqual(self.srv.check_health(""), harness.SERVING)
        self.assertEqual(self.srv.check_health(harness.SERVICE), harness.SERVING)
        status, body, _ = http_request(self.srv.http_port, "GET", "/health")
        self.assertEqual((status, body), (200, {"status": "serving"}))

    def test_http_routes(self):
        port = self.srv.http_port
        completion = {"prompt": "Hi", "max_tokens": 2, "temperature": 0}
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        routes = (("POST", "/v1/completions", completion), ("POST", "/v1/chat/completions", chat),
                  ("GET", "/v1/models", None))
        for method, path, body in routes:
            for key in (None, WRONG_KEY, ""):
                with self.subTest(path=path, key=key):
                    status, err, resp = http_request(port, method, path, body, key)
                    self.assertEqual(status, 401, err)
                    self.assertEqual(err["error"]["type"], "invalid_request_error")
                    self.assertEqual(err["error"]["code"], "invalid_api_key")
                    self.assertIn("API key", err["error"]["message"])
                    self.assertEqual(resp.getheader("WWW-Authenticate"), "Bearer")
            for key in (PLAIN_KEY, HASHED_KEY):
                with self.subTest(path=path, key="right"):
                    status, out, _ = http_request(port, method, path, body, key)
                    self.assertEqual(status, 200, out)

    def test_keys_never_logged(self):
        RPCS["Complete"](self.srv.stub, bearer(PLAIN_KEY))
        for md in (bearer(WRONG_KEY), ()):
            with self.assertRaises(grpc.RpcError):
                RPCS["Tokenize"](self.srv.stub, md)
        http_request(self.srv.http_port, "GET", "/v1/models", key=WRONG_KEY)
        self.srv.wait_log("auth=missing")
        log = self.srv.stderr_text()
        self.assertIn("auth=invalid", log)
        for secret in (PLAIN_KEY, HASHED_KEY, WRONG_KEY):
            self.assertNotIn(secret, log)

    def test_cli_api_key(self):
        base = [CLI, "--server", "127.0.0.1:%d" % self.srv.port]
        r = subprocess.run(base + ["--api_key", PLAIN_KEY, "tokenize", "Hi"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        env = dict(os.environ, MEMSERVE_API_KEY=HASHED_KEY)
        r = subprocess.run(base + ["tokenize", "Hi"], capture_output=True, text=True, timeout=60,
                           env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        env.pop("MEMSERVE_API_KEY")
        r = subprocess.run(base + ["tokenize", "Hi"], capture_output=True, text=True, timeout=60,
                           env=env)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("UNAUTHENTICATED", r.stderr)

    def test_bench_api_key(self):
        cmd = [BENCH, "--server", "127.0.0.1:%d" % self.srv.port, "--dataset", "random",
               "--random_input_len", "8", "--random_output_len", "2", "--num_prompts", "2"]
        r = subprocess.run(cmd + ["--api_key", PLAIN_KEY], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "MEMSERVE_API_KEY"})
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("UNAUTHENTICATED", r.stderr)


class KeyFileTest(unittest.TestCase):

    def serve(self, path):
        cmd = [harness.memserve_binary(), "serve", "--model", DEMO_MODEL, "--listen",
               "127.0.0.1:0", "--api_keys_file", path]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)

    def assertRefused(self, r, *needles):
        self.assertEqual(r.returncode, 2, "stderr=%r" % r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, "not one line: %r" % r.stderr)
        for n in ("--api_keys_file",) + needles:
            self.assertIn(n, r.stderr)

    def test_bad_files(self):
        d = harness.tmpdir("auth-bad-")
        missing = os.path.join(d, "absent.txt")
        self.assertRefused(self.serve(missing), missing, "cannot read")
        empty = write_keys(d, "# nothing\n\n", "empty.txt")
        self.assertRefused(self.serve(empty), empty, "no keys")
        short_hash = write_keys(d, "good-key\n\nsha256:abc123\n", "short.txt")
        self.assertRefused(self.serve(short_hash), short_hash + ":3:", "sha256")
        spaced = write_keys(d, "# c\nsecret key\n", "spaced.txt")
        r = self.serve(spaced)
        self.assertRefused(r, spaced + ":2:")
        self.assertNotIn("secret", r.stderr)


if __name__ == "__main__":
    CLI = harness.take_path_arg("--cli", "clients/cli/memserve-cli")
    BENCH = harness.take_path_arg("--bench", "clients/bench/memserve-bench")
    harness.main()
