"""End-to-end tests of the OpenAI-compatible HTTP API of `memserve serve
--http_listen` (docs/api.md, "HTTP API") with Python's standard library
(http.client, urllib) against the real server: unary and streaming
completions and chat, the server-sent-event framing, every error status
(400, 404, 413, 429, 503, 504), cancellation when the client disconnects
(the server back to idle, no KV blocks left), deadlines, the drain, and the
gRPC and HTTP paths giving identical greedy output.

Run: bazel test //tests/e2e:http_test, or by hand (see harness.py).
"""
import http.client
import json
import os
import socket
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import pb, greedy  # noqa: E402

CAPITAL = "The capital of Batourkor is"
ANSWER = " Draenddron."


def connect(port, timeout=60):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def post(port, path, body, headers=None, timeout=60):
    """POSTs `body` (a dict as JSON, or raw str/bytes); returns (response,
    connection), the body unread."""
    conn = connect(port, timeout)
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request("POST", path, body=data, headers=h)
    return conn.getresponse(), conn


def post_json(port, path, body, headers=None, timeout=60):
    """(status, parsed JSON body, response headers)."""
    resp, conn = post(port, path, body, headers, timeout)
    try:
        raw = resp.read()
        return resp.status, json.loads(raw), resp
    finally:
        conn.close()


def get_json(port, path):
    conn = connect(port)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def parse_sse(raw):
    """Splits a whole event-stream body into the data of its events, checking
    the framing: every event is exactly one `data: ` line ended by a blank
    line. Returns a list of parsed JSON objects and the string "[DONE]"."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), "stream does not end with a blank line: %r" % text[-40:]
    events = []
    for block in text[:-2].split("\n\n"):
        assert "\n" not in block, "an event of more than one line: %r" % block
        assert block.startswith("data: "), "not a data line: %r" % block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def stream(port, path, body, headers=None):
    """(status, events, response) of a streaming request read to its end."""
    resp, conn = post(port, path, dict(body, stream=True), headers)
    try:
        raw = resp.read()
        if resp.status != 200:
            return resp.status, json.loads(raw), resp
        return resp.status, parse_sse(raw), resp
    finally:
        conn.close()


def chat_body(content, **kw):
    return dict(messages=[{"role": "user", "content": content}], **kw)


class HttpServerTest(unittest.TestCase):
    """One server with the HTTP API, default flags except a 1 MiB request limit."""
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server("--max_request_bytes", str(1 << 20), http=True,
                                 name="http").start()
        cls.port = cls.srv.http_port

    @classmethod
    def tearDownClass(cls):
        if cls.srv is not None:
            rc = cls.srv.stop(timeout=30)
            print("http: exit code %s; stderr tail:\n%s" % (rc, cls.srv.stderr_tail(5)))
            if rc != 0:
                raise AssertionError("server exit code %s" % rc)

    def assert_error(self, status, body, want_status, want_type, message_start=None, param=None):
        self.assertEqual(status, want_status, body)
        self.assertEqual(set(body), {"error"}, body)
        err = body["error"]
        self.assertEqual(set(err), {"message", "type", "param", "code"}, body)
        self.assertEqual(err["type"], want_type, body)
        if message_start is not None:
            self.assertTrue(err["message"].startswith(message_start), err["message"])
        if param is not None:
            self.assertEqual(err["param"], param, body)
        return err

    # -- discovery -----------------------------------------------------------

    def test_models_and_health(self):
        status, body = get_json(self.port, "/v1/models")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["object"], "list")
        self.assertEqual(len(body["data"]), 1)
        card = body["data"][0]
        self.assertEqual(card["id"], "demo")
        self.assertEqual(card["object"], "model")
        self.assertEqual(card["owned_by"], "memserve")
        self.assertEqual(card["max_model_len"], self.srv.model_info().max_seqlen)
        self.assertIsInstance(card["created"], int)
        status, one = get_json(self.port, "/v1/models/demo")
        self.assertEqual((status, one), (200, card))
        status, body = get_json(self.port, "/v1/models/other")
        err = self.assert_error(status, body, 404, "not_found_error")
        self.assertEqual(err["code"], "model_not_found")
        self.assertEqual(get_json(self.port, "/health"), (200, {"status": "serving"}))

    def test_chat_page(self):
        conn = connect(self.port)
        conn.request("GET", "/")
        resp = conn.getresponse()
        page = resp.read().decode("utf-8")
        conn.close()
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.getheader("Content-Type").startswith("text/html"))
        self.assertIn("/v1/chat/completions", page)
        # Self-contained: nothing loaded from elsewhere.
        for needle in ("src=\"http", "href=\"http", "<link ", "@import"):
            self.assertNotIn(needle, page)

    # -- completions ---------------------------------------------------------

    def test_completion_unary(self):
        status, body, resp = post_json(self.port, "/v1/completions", {
            "model": "demo", "prompt": CAPITAL, "max_tokens": 20, "temperature": 0})
        self.assertEqual(status, 200, body)
        self.assertTrue(resp.getheader("Content-Type").startswith("application/json"))
        self.assertTrue(body["id"].startswith("cmpl-"), body)
        self.assertEqual(body["object"], "text_completion")
        self.assertEqual(body["model"], "demo")
        self.assertLess(abs(body["created"] - time.time()), 60)
        self.assertEqual(len(body["choices"]), 1)
        choice = body["choices"][0]
        self.assertEqual(choice["index"], 0)
        self.assertEqual(choice["text"], ANSWER)
        self.assertEqual(choice["finish_reason"], "stop")  # EOS
        self.assertIsNone(choice["stop_reason"])
        self.assertIsNone(choice["logprobs"])
        usage = body["usage"]
        self.assertEqual(usage["prompt_tokens"], len(CAPITAL) + 1)  # bytes + BOS
        self.assertEqual(usage["completion_tokens"], len(ANSWER) + 1)  # + EOS
        self.assertEqual(usage["total_tokens"], usage["prompt_tokens"] + usage["completion_tokens"])

    def test_completion_with_urllib_and_request_id(self):
        req = urllib.request.Request(
            "http://127.0.0.1:%d/v1/completions" % self.port,
            data=json.dumps({"prompt": CAPITAL, "max_tokens": 3, "temperature": 0}).encode(),
            headers={"Content-Type": "application/json", "X-Request-Id": "http-e2e-1"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.loads(resp.read())
            self.assertEqual(resp.headers["X-Request-Id"], "http-e2e-1")
        self.assertEqual(body["id"], "cmpl-http-e2e-1")
        self.assertEqual(body["choices"][0]["finish_reason"], "length")
        self.assertEqual(body["usage"]["completion_tokens"], 3)
        line = self.srv.wait_log("request id=http-e2e-1 ", timeout=5)
        self.assertIsNotNone(line)
        self.assertIn("method=/v1/completions status=OK finish=length", line)

    def test_completion_stream(self):
        status, events, resp = stream(self.port, "/v1/completions", {
            "prompt": CAPITAL, "max_tokens": 20, "temperature": 0,
            "stream_options": {"include_usage": True}})
        self.assertEqual(status, 200, events)
        self.assertEqual(resp.getheader("Content-Type"), "text/event-stream")
        self.assertEqual(resp.getheader("Transfer-Encoding"), "chunked")
        self.assertEqual(events[-1], "[DONE]")
        usage_chunk = events[-2]
        self.assertEqual(usage_chunk["choices"], [])
        usage = usage_chunk["usage"]
        chunks = events[:-2]
        # One chunk per generated token, then the one with the finish reason.
        self.assertEqual(len(chunks), usage["completion_tokens"] + 1, chunks)
        ids = {c["id"] for c in chunks}
        self.assertEqual(len(ids), 1)
        self.assertTrue(ids.pop().startswith("cmpl-"))
        for c in chunks:
            self.assertEqual(c["object"], "text_completion")
            self.assertIsNone(c["usage"])  # include_usage: null until the last chunk
        for c in chunks[:-1]:
            self.assertIsNone(c["choices"][0]["finish_reason"])
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "stop")
        text = "".join(c["choices"][0]["text"] for c in chunks)
        self.assertEqual(text, ANSWER)

    def test_stop_string_and_logprobs(self):
        status, body, _ = post_json(self.port, "/v1/completions", {
            "prompt": CAPITAL, "max_tokens": 20, "temperature": 0, "stop": ["dd"],
            "logprobs": 2})
        self.assertEqual(status, 200, body)
        choice = body["choices"][0]
        self.assertEqual(choice["text"], " Draen")
        self.assertEqual(choice["finish_reason"], "stop")
        self.assertEqual(choice["stop_reason"], "dd")
        lp = choice["logprobs"]
        n = body["usage"]["completion_tokens"]
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            self.assertEqual(len(lp[key]), n, key)
        self.assertEqual("".join(lp["tokens"]), " Draendd")
        for top in lp["top_logprobs"]:
            self.assertLessEqual(len(top), 2)
        self.assertTrue(all(x <= 0 for x in lp["token_logprobs"]))

    # -- chat ----------------------------------------------------------------

    def test_chat_unary_and_stream(self):
        # The demo's chat template is "raw": the contents joined by newlines.
        status, body, _ = post_json(self.port, "/v1/chat/completions",
                                    chat_body(CAPITAL, max_tokens=20, temperature=0))
        self.assertEqual(status, 200, body)
        self.assertTrue(body["id"].startswith("chatcmpl-"))
        self.assertEqual(body["object"], "chat.completion")
        choice = body["choices"][0]
        self.assertEqual(choice["message"], {"role": "assistant", "content": ANSWER})
        self.assertEqual(choice["finish_reason"], "stop")

        status, events, resp = stream(self.port, "/v1/chat/completions",
                                      chat_body(CAPITAL, max_tokens=20, temperature=0,
                                                logprobs=True, top_logprobs=1))
        self.assertEqual(status, 200, events)
        self.assertEqual(events[-1], "[DONE]")
        chunks = events[:-1]
        self.assertEqual(len(chunks), body["usage"]["completion_tokens"] + 1)
        self.assertEqual(chunks[0]["object"], "chat.completion.chunk")
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        self.assertNotIn("role", chunks[1]["choices"][0]["delta"])
        self.assertNotIn("usage", chunks[0])
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        self.assertEqual(text, ANSWER)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "stop")
        entry = chunks[1]["choices"][0]["logprobs"]["content"][0]
        self.assertEqual(entry["token"], "D")
        self.assertEqual(entry["bytes"], [ord("D")])
        self.assertEqual(len(entry["top_logprobs"]), 1)

    def test_chat_keeps_the_conversation(self):
        # Two user turns rendered by the raw template: "U1\nA1\nU2".
        status, body, _ = post_json(self.port, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Hello"},
                         {"role": "assistant", "content": "Hi"},
                         {"role": "user", "content": CAPITAL}],
            "max_tokens": 5, "temperature": 0})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["usage"]["prompt_tokens"], 1 + len("Hello\nHi\n" + CAPITAL))

    # -- the same engine path as gRPC -----------------------------------------

    def test_grpc_and_http_give_identical_greedy_output(self):
        facts = harness.load_facts()[:12]
        stub = self.srv.stub
        for i, fact in enumerate(facts):
            prompt = fact["prompt"]
            max_tokens = 4 + i  # some end by length, some by EOS
            g = stub.Complete(pb.GenerateRequest(text=prompt, sampling=greedy(max_tokens)),
                              timeout=60)
            status, body, _ = post_json(self.port, "/v1/completions", {
                "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "logprobs": 0})
            self.assertEqual(status, 200, body)
            choice = body["choices"][0]
            self.assertEqual(choice["text"], g.text, prompt)
            self.assertEqual(body["usage"]["completion_tokens"], g.usage.completion_tokens)
            self.assertEqual(body["usage"]["prompt_tokens"], g.usage.prompt_tokens)
            want_finish = "length" if g.finish_reason == pb.FINISH_REASON_LENGTH else "stop"
            self.assertEqual(choice["finish_reason"], want_finish)
            for a, b in zip(choice["logprobs"]["token_logprobs"], g.token_logprobs):
                self.assertAlmostEqual(a, b, places=5)
            # Streaming HTTP too.
            status, events, _ = stream(self.port, "/v1/completions", {
                "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
            self.assertEqual("".join(e["choices"][0]["text"] for e in events[:-1]), g.text)
            # Chat: ChatComplete vs /v1/chat/completions.
            gc = stub.ChatComplete(pb.ChatRequest(
                messages=[pb.ChatMessage(role="user", content=prompt)],
                sampling=greedy(max_tokens)), timeout=60)
            status, body, _ = post_json(self.port, "/v1/chat/completions",
                                        chat_body(prompt, max_tokens=max_tokens, temperature=0))
            self.assertEqual(body["choices"][0]["message"]["content"], gc.text)
        # Seeded sampling is the same path too.
        g = stub.Complete(pb.GenerateRequest(
            text="The", sampling=pb.SamplingParams(temperature=1.0, seed=42, max_tokens=24,
                                                   top_k=50)), timeout=60)
        status, body, _ = post_json(self.port, "/v1/completions", {
            "prompt": "The", "temperature": 1.0, "seed": 42, "max_tokens": 24, "top_k": 50})
        self.assertEqual(body["choices"][0]["text"], g.text)

    def test_concurrent_streams_share_the_batch(self):
        # 24 streams at once (one thread per connection): each gets the text it gets alone.
        facts = harness.load_facts()[:24]
        want = [self.srv.stub.Complete(pb.GenerateRequest(text=f["prompt"], sampling=greedy(20)),
                                       timeout=60).text for f in facts]

        def one(prompt):
            def run():
                status, events, _ = stream(self.port, "/v1/completions", {
                    "prompt": prompt, "max_tokens": 20, "temperature": 0})
                self.assertEqual(status, 200, events)
                return "".join(e["choices"][0]["text"] for e in events[:-1])
            return run

        got = harness.run_threads([one(f["prompt"]) for f in facts], timeout=120)
        self.assertEqual(got, want)
        self.srv.wait_idle(timeout=5)

    # -- errors --------------------------------------------------------------

    def test_invalid_requests_are_400_naming_the_field(self):
        cases = [
            ({"prompt": CAPITAL, "temperature": -1}, "temperature must be in [0, inf)",
             "temperature"),
            ({"prompt": CAPITAL, "top_p": 0}, "top_p must be in (0, 1], got 0", "top_p"),
            ({"prompt": CAPITAL, "max_tokens": 0}, "max_tokens must be in [1, 128]", "max_tokens"),
            ({"prompt": "x" * 200}, "prompt: the prompt is 201 tokens", "prompt"),
            ({"prompt": CAPITAL, "max_tokens": 120}, "prompt (28 tokens) + max_tokens (120)",
             "prompt"),
            ({"prompt": ""}, "prompt is empty", "prompt"),
            ({"prompt": [999]}, "prompt[0] = 999 is outside the vocabulary", "prompt[0]"),
            ({"prompt": CAPITAL, "stop": [""]}, "stop[0] is 0 bytes", "stop[0]"),
            ({"prompt": CAPITAL, "logprobs": 21}, "logprobs must be in [0, 20]", "logprobs"),
            ({"prompt": CAPITAL, "temprature": 0}, "temprature: unrecognized request field", None),
            ({"prompt": CAPITAL, "n": 3}, "n must be 1", "n"),
            ({"prompt": CAPITAL, "max_tokens": "5"}, "max_tokens must be an integer", "max_tokens"),
        ]
        for body, message, param in cases:
            status, reply, _ = post_json(self.port, "/v1/completions", body)
            err = self.assert_error(status, reply, 400, "invalid_request_error", message, param)
            self.assertIsNone(err["code"])
        chat_cases = [
            ({"messages": []}, "messages is empty", "messages"),
            ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role must be one of",
             "messages[0].role"),
            (chat_body("x", logprobs=True, top_logprobs=25), "top_logprobs must be in [0, 20]",
             "top_logprobs"),
        ]
        for body, message, param in chat_cases:
            status, reply, _ = post_json(self.port, "/v1/chat/completions", body)
            self.assert_error(status, reply, 400, "invalid_request_error", message, param)
        # Not JSON; not an object; a bad header.
        status, reply, _ = post_json(self.port, "/v1/completions", "{\"prompt\": ")
        self.assert_error(status, reply, 400, "invalid_request_error",
                          "the request body is not valid JSON")
        status, reply, _ = post_json(self.port, "/v1/completions", "[]")
        self.assert_error(status, reply, 400, "invalid_request_error",
                          "the request body must be a JSON object")
        status, reply, _ = post_json(self.port, "/v1/completions", {"prompt": CAPITAL},
                                     headers={"X-Request-Timeout-Ms": "soon"})
        self.assert_error(status, reply, 400, "invalid_request_error",
                          "X-Request-Timeout-Ms must be a positive integer", "X-Request-Timeout-Ms")
        status, reply, _ = post_json(self.port, "/v1/completions", {"prompt": CAPITAL},
                                     headers={"X-Request-Id": "has space"})
        self.assert_error(status, reply, 400, "invalid_request_error",
                          "X-Request-Id must be printable ASCII", "X-Request-Id")
        # A streaming request refused before it started is a plain error response.
        status, reply, _ = stream(self.port, "/v1/completions", {"prompt": CAPITAL, "top_p": 2})
        self.assert_error(status, reply, 400, "invalid_request_error", "top_p must be in (0, 1]")
        # The server still serves.
        self.assertEqual(self.srv.wait_idle().running, 0)

    def test_unknown_model_and_route_are_404(self):
        status, reply, _ = post_json(self.port, "/v1/completions",
                                     {"model": "gpt-4", "prompt": CAPITAL})
        err = self.assert_error(status, reply, 404, "not_found_error", "model: `gpt-4` does not exist",
                                "model")
        self.assertEqual(err["code"], "model_not_found")
        status, reply, _ = post_json(self.port, "/v1/embeddings", {"input": "x"})
        self.assert_error(status, reply, 404, "not_found_error", "no route POST /v1/embeddings")
        status, reply = get_json(self.port, "/nothing/here")
        self.assert_error(status, reply, 404, "not_found_error", "no route GET /nothing/here")

    def test_body_over_the_limit_is_413(self):
        body = json.dumps({"prompt": "x" * ((1 << 20) + 10)})
        status, reply, _ = post_json(self.port, "/v1/completions", body)
        err = self.assert_error(status, reply, 413, "invalid_request_error",
                                "the request body is over --max_request_bytes (1048576 bytes)")
        self.assertEqual(err["code"], "request_too_large")


class SlowHttpServerTest(unittest.TestCase):
    """A server with one sequence at a time, a queue of one, and 20 ms per
    engine step, so that requests stay in flight long enough to observe."""
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server("--debug_step_delay", "20ms", "--max_batch_size", "1",
                                 "--max_queue", "1", http=True, name="slow_http").start()
        cls.port = cls.srv.http_port

    @classmethod
    def tearDownClass(cls):
        if cls.srv is not None:
            cls.srv.kill()

    def long_body(self, **kw):
        body = dict(prompt="Hi", max_tokens=100, temperature=0, ignore_eos=True)
        body.update(kw)
        return body

    def test_disconnect_cancels_a_stream(self):
        srv = self.srv
        srv.wait_idle()
        served = srv.status().requests_served
        resp, conn = post(self.port, "/v1/completions", self.long_body(stream=True))
        self.assertEqual(resp.status, 200)
        first = resp.readline()
        self.assertTrue(first.startswith(b"data: "), first)
        st = srv.status()
        self.assertEqual(st.running, 1, st)
        self.assertGreater(st.kv_blocks_used, 0, st)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        t0 = time.monotonic()
        srv.wait_idle(timeout=2.0)
        print("stream disconnect: idle after %.0f ms" % ((time.monotonic() - t0) * 1000))
        self.assertEqual(srv.status().requests_served, served, "a cancelled request was counted")
        self.assertIsNotNone(srv.wait_log("method=/v1/completions status=CANCELLED", timeout=2))

    def test_disconnect_cancels_a_unary_request(self):
        srv = self.srv
        srv.wait_idle()
        body = json.dumps(self.long_body()).encode()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        srv.wait_status(lambda s: s.running == 1 and s.kv_blocks_used > 0, timeout=5,
                        what="request running")
        sock.close()
        t0 = time.monotonic()
        srv.wait_idle(timeout=2.0)
        print("unary disconnect: idle after %.0f ms" % ((time.monotonic() - t0) * 1000))

    def test_full_queue_is_429(self):
        srv = self.srv
        srv.wait_idle()
        running, conn1 = post(self.port, "/v1/completions", self.long_body(stream=True))
        running.readline()
        waiting = []

        def wait_in_queue():
            waiting.append(post_json(self.port, "/v1/completions", self.long_body(max_tokens=2)))

        t = threading.Thread(target=wait_in_queue, daemon=True)
        t.start()
        srv.wait_status(lambda s: s.running == 1 and s.waiting == 1, timeout=5, what="one waiting")
        status, reply, _ = post_json(self.port, "/v1/completions", self.long_body())
        self.assertEqual(status, 429, reply)
        self.assertEqual(reply["error"]["type"], "rate_limit_error")
        self.assertIn("queue", reply["error"]["message"])
        conn1.close()
        t.join(30)
        self.assertEqual(waiting[0][0], 200, waiting)
        srv.wait_idle(timeout=5)

    def test_deadline_is_504(self):
        srv = self.srv
        srv.wait_idle()
        t0 = time.monotonic()
        status, reply, _ = post_json(self.port, "/v1/completions", self.long_body(),
                                     headers={"X-Request-Timeout-Ms": "300"})
        self.assertEqual(status, 504, reply)
        self.assertEqual(reply["error"]["type"], "timeout_error")
        self.assertLess(time.monotonic() - t0, 1.5)
        srv.wait_idle(timeout=1.0)
        # Streaming: tokens, then an error event and [DONE].
        status, events, _ = stream(self.port, "/v1/completions", self.long_body(),
                                   headers={"X-Request-Timeout-Ms": "300"})
        self.assertEqual(status, 200)
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(events[-2]["error"]["type"], "timeout_error", events[-2])
        self.assertGreater(len(events), 2)
        srv.wait_idle(timeout=1.0)


class LifecycleHttpTest(unittest.TestCase):

    def test_loading_and_draining_are_503(self):
        srv = harness.Server("--debug_load_delay", "2s", "--debug_step_delay", "20ms",
                             http=True, name="http_lifecycle")
        srv.start(wait_ready=False)
        try:
            port = srv.http_port
            self.assertEqual(get_json(port, "/health"), (503, {"status": "loading"}))
            status, reply, _ = post_json(port, "/v1/completions", {"prompt": CAPITAL})
            self.assertEqual(status, 503, reply)
            self.assertEqual(reply["error"]["type"], "service_unavailable_error")
            self.assertIn("loading", reply["error"]["message"])
            status, reply = get_json(port, "/v1/models")
            self.assertEqual(status, 503, reply)
            srv.wait_ready(timeout=30)
            self.assertEqual(get_json(port, "/health"), (200, {"status": "serving"}))
            # A long stream is in flight when SIGTERM comes: it finishes; new work is 503.
            resp, conn = post(port, "/v1/completions",
                              {"prompt": "Hi", "max_tokens": 100, "temperature": 0,
                               "ignore_eos": True, "stream": True})
            resp.readline()
            srv.signal()
            srv.wait_status(lambda s: s.state == pb.SERVING_STATE_DRAINING, timeout=5,
                            what="draining")
            self.assertEqual(get_json(port, "/health"), (503, {"status": "draining"}))
            status, reply, _ = post_json(port, "/v1/completions", {"prompt": CAPITAL})
            self.assertEqual(status, 503, reply)
            self.assertEqual(reply["error"]["type"], "service_unavailable_error")
            rest = resp.read()
            conn.close()
            events = parse_sse(rest.lstrip(b"\n"))  # the first event's blank line is left
            self.assertEqual(events[-1], "[DONE]")
            self.assertEqual(events[-2]["choices"][0]["finish_reason"], "length")
            self.assertEqual(srv.wait_exit(timeout=30), 0)
        finally:
            srv.kill()

    def test_http_port_in_use_is_refused(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        try:
            srv = harness.Server("--http_listen", "127.0.0.1:%d" % port, name="http_in_use")
            try:
                srv.start(wait_ready=False, timeout=30)
            except harness.ServerError:
                pass  # it may exit before the harness saw its gRPC port file
            rc = srv.proc.wait(timeout=30)
            self.assertEqual(rc, 1)
            self.assertIn("cannot listen on 127.0.0.1:%d (--http_listen): address already in use"
                          % port, srv.stderr_text())
        finally:
            blocker.close()

    def test_bad_http_listen_is_exit_2(self):
        srv = harness.Server("--http_listen", "localhost", name="http_bad_listen")
        with self.assertRaises(harness.ServerError):
            srv.start(wait_ready=False, timeout=30)
        self.assertEqual(srv.proc.wait(timeout=10), 2)
        self.assertIn("--http_listen: expected HOST:PORT", srv.stderr_text())


if __name__ == "__main__":
    harness.main()
