"""End-to-end tests of the server's resource limits (docs/security.md,
"Limits") against a real `memserve serve` on loopback:
--max_streams_per_client (per API key with --api_keys_file, else per peer
address; both transports; RESOURCE_EXHAUSTED / HTTP 429 naming the flag and the
limit; a slot is free again as soon as a call ends), --max_concurrent_streams
(a second call on one connection waits for the first) and --max_response_bytes
(a larger response fails with RESOURCE_EXHAUSTED). The per-request limits
(prompt bytes, stop strings, logprobs, max_tokens) are in bad_input_test.py.

Run: bazel test //tests/e2e:limits_test, or by hand (see harness.py).
"""
import http.client
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import harness  # noqa: E402
from harness import pb, greedy  # noqa: E402

PROMPT = "The capital of Batourkor is"


def bearer(key):
    return (("authorization", "Bearer " + key),) if key else None


def long_stream(stub, key=None, tokens=60):
    """A Generate stream that runs `tokens` steps; returns it after its first token."""
    call = stub.Generate(pb.GenerateRequest(text=PROMPT,
                                            sampling=greedy(tokens, ignore_eos=True)),
                         metadata=bearer(key), timeout=120)
    first = next(call)
    assert first.WhichOneof("event") == "token", first
    return call


def complete(stub, key=None):
    return stub.Complete(pb.GenerateRequest(text=PROMPT, sampling=greedy(2)),
                         metadata=bearer(key), timeout=60)


def http_completion(port, key=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    conn.request("POST", "/v1/completions",
                 json.dumps({"prompt": PROMPT, "max_tokens": 2, "temperature": 0}), headers)
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, body


class StreamsPerClientTest(unittest.TestCase):

    def assertLimited(self, fn, limit):
        with self.assertRaises(grpc.RpcError) as e:
            fn()
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("the limit is --max_streams_per_client=%d" % limit, e.exception.details())

    def test_per_peer_without_keys(self):
        with harness.Server("--max_streams_per_client", "2", "--debug_step_delay", "20ms",
                            name="per_peer", http=True) as srv:
            streams = [long_stream(srv.stub) for _ in range(2)]
            # A third call from the same address, on either transport, is refused.
            self.assertLimited(lambda: complete(srv.stub), 2)
            status, body = http_completion(srv.http_port)
            self.assertEqual(status, 429, body)
            self.assertIn("--max_streams_per_client=2", body)
            # Other calls are not generation calls: not counted.
            self.assertEqual(srv.model_info().model_name, "demo")
            for s in streams:
                self.assertEqual(harness.read_stream(s).code, grpc.StatusCode.OK)
            # Freed as soon as the calls end: sequential calls never hit the limit.
            for _ in range(5):
                self.assertEqual(len(complete(srv.stub).token_ids), 2)
            self.assertEqual(srv.stop(), 0, srv.stderr_tail())

    def test_per_api_key(self):
        keys = os.path.join(harness.tmpdir("limits_keys_"), "keys.txt")
        with open(keys, "w") as f:
            f.write("key-a\nkey-b\n")
        with harness.Server("--max_streams_per_client", "1", "--api_keys_file", keys,
                            "--debug_step_delay", "20ms", name="per_key", http=True) as srv:
            stream = long_stream(srv.stub, "key-a")
            self.assertLimited(lambda: complete(srv.stub, "key-a"), 1)
            status, _ = http_completion(srv.http_port, "key-a")
            self.assertEqual(status, 429)
            # Another key from the same address has its own budget.
            self.assertEqual(len(complete(srv.stub, "key-b").token_ids), 2)
            self.assertEqual(http_completion(srv.http_port, "key-b")[0], 200)
            # A refused key is UNAUTHENTICATED, not counted.
            with self.assertRaises(grpc.RpcError) as e:
                complete(srv.stub, "key-x")
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(harness.read_stream(stream).code, grpc.StatusCode.OK)
            self.assertEqual(len(complete(srv.stub, "key-a").token_ids), 2)

    def test_bad_value(self):
        srv = harness.Server("--max_streams_per_client", "-1", name="bad_limit")
        with self.assertRaises(harness.ServerError):
            srv.start(timeout=30)
        self.assertEqual(srv.wait_exit(10), 2)
        self.assertIn("--max_streams_per_client must be in [0, 1048576]", srv.stderr_text())


class ConnectionLimitsTest(unittest.TestCase):

    def test_max_concurrent_streams_queues_the_second_call(self):
        with harness.Server("--max_concurrent_streams", "1", "--debug_step_delay", "20ms",
                            name="one_stream") as srv:
            times = {}
            first = long_stream(srv.stub, tokens=40)

            def second():
                r = harness.read_stream(srv.stub.Generate(
                    pb.GenerateRequest(text=PROMPT, sampling=greedy(2)), timeout=120))
                times["second_done"] = time.monotonic()
                return r

            t = threading.Thread(target=second)
            t.start()
            # Another connection sees one call in the engine, none waiting.
            with grpc.insecure_channel("127.0.0.1:%d" % srv.port) as other:
                stub = harness.pb_grpc.MemServeStub(other)
                time.sleep(0.3)
                st = stub.GetServerStatus(pb.GetServerStatusRequest(), timeout=10)
                self.assertEqual((st.running, st.waiting), (1, 0))
            r = harness.read_stream(first)
            times["first_done"] = time.monotonic()
            t.join(60)
            self.assertEqual(r.code, grpc.StatusCode.OK)
            self.assertGreaterEqual(times["second_done"], times["first_done"] - 0.05)

    def test_max_response_bytes(self):
        with harness.Server("--max_response_bytes", str(1 << 20), name="small_response") as srv:
            # ~2 MB of text: its token ids are more than 1 MiB.
            text = "The capital of Batourkor is Velmora. " * 56000
            with self.assertRaises(grpc.RpcError) as e:
                srv.stub.Tokenize(pb.TokenizeRequest(text=text), timeout=60)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            # Small responses are fine.
            self.assertGreater(len(srv.stub.Tokenize(pb.TokenizeRequest(text="Hi"),
                                                     timeout=60).token_ids), 0)


if __name__ == "__main__":
    harness.main()
