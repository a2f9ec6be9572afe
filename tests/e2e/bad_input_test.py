"""End-to-end tests of request validation in `memserve serve`: every rejected
request fails with INVALID_ARGUMENT naming the field (docs/api.md, "Errors"),
the server stays up after each, and nothing is left behind.

Run: bazel test //tests/e2e:bad_input_test, or by hand (see harness.py).
"""
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import harness  # noqa: E402
from harness import pb, greedy, SERVING, SERVICE  # noqa: E402

SRV = None
CONFIG = harness.load_config()
VOCAB = CONFIG["vocab_size"]
MAX_SEQLEN = CONFIG["max_seqlen"]
FACT = "The capital of Batourkor is"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def setUpModule():
    global SRV
    SRV = harness.Server(name="bad_input").start()


def tearDownModule():
    if SRV is not None:
        rc = SRV.stop(timeout=30)
        print("server exit code %s; stderr tail:\n%s" % (rc, SRV.stderr_tail(10)))
        assert rc == 0, "server exit code %s" % rc


def req(text=FACT, **sampling):
    return pb.GenerateRequest(text=text, sampling=pb.SamplingParams(**sampling))


def with_ids(ids, **sampling):
    r = pb.GenerateRequest(sampling=pb.SamplingParams(**sampling))
    r.token_ids.SetInParent()
    r.token_ids.ids.extend(ids)
    return r


def chat(*messages, **sampling):
    return pb.ChatRequest(messages=[pb.ChatMessage(role=r, content=c) for r, c in messages],
                          sampling=pb.SamplingParams(**sampling))


def names_field(message, field):
    """True if `message` names `field` as a word ("text" in "context" does not count;
    "memserve.v1.GenerateRequest.text" does)."""
    return re.search(r"(?<![\w])" + re.escape(field) + r"(?![\w])", message or "") is not None


def raw_call(method, request_bytes, streaming=False, timeout=30):
    """Sends already-serialized bytes to /memserve.v1.MemServe/<method>; returns the
    grpc.RpcError or None."""
    path = "/memserve.v1.MemServe/" + method
    if streaming:
        fn = SRV.channel.unary_stream(path, request_serializer=lambda b: b,
                                      response_deserializer=pb.GenerateResponse.FromString)
    else:
        fn = SRV.channel.unary_unary(path, request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
    return harness.rpc_error(fn, request_bytes, timeout=timeout)


def patch_utf8(msg, placeholder):
    """Serializes `msg` (which contains `placeholder` in one string field) with
    the placeholder's bytes replaced by invalid UTF-8 of the same length."""
    data = msg.SerializeToString()
    p = placeholder.encode()
    assert data.count(p) == 1 and len(p) >= 6
    bad = b"ab\xff\xfe\xc3(" + p[6:]
    return data.replace(p, bad)


class BadInputTest(unittest.TestCase):

    def assertRejected(self, call, request, *fields, code=INVALID, timeout=30):
        """call(request) fails with `code`, its message contains at least one of
        `fields` (if any are given), and the server is still ready afterwards."""
        e = harness.rpc_error(call, request, timeout=timeout)
        self.assertIsNotNone(e, "accepted: %s" % _short(request))
        self.assertEqual(e.code(), code, "%s -> %s %r" % (_short(request), e.code(),
                                                          e.details()))
        if fields:
            self.assertTrue(any(names_field(e.details(), f) for f in fields),
                            "message %r names none of %s" % (e.details(), fields))
        self.assertServing()
        return e

    def assertGenerateRejected(self, request, *fields, code=INVALID):
        """Both the unary and the streaming form reject `request`."""
        self.assertRejected(SRV.stub.Complete, request, *fields, code=code)
        return self.assertRejected(SRV.stub.Generate, request, *fields, code=code)

    def assertServing(self):
        self.assertTrue(SRV.running(), "server died:\n%s" % SRV.stderr_tail())
        self.assertEqual(SRV.check_health(SERVICE), SERVING)

    def assertAccepted(self, request):
        c = SRV.stub.Complete(request, timeout=60)
        self.assertGreater(len(c.token_ids), 0)
        return c

    # -- input ---------------------------------------------------------------

    def test_no_input(self):
        self.assertGenerateRejected(pb.GenerateRequest(sampling=greedy(3)), "text", "input")

    def test_empty_text(self):
        r = req("", temperature=0.0, max_tokens=3)
        self.assertEqual(r.WhichOneof("input"), "text")
        self.assertGenerateRejected(r, "text")

    def test_empty_token_ids(self):
        r = with_ids([], temperature=0.0, max_tokens=3)
        self.assertEqual(r.WhichOneof("input"), "token_ids")
        self.assertGenerateRejected(r, "token_ids")

    def test_prompt_over_context(self):
        self.assertGenerateRejected(req("x" * 200, temperature=0.0), "text")
        # 127 bytes + BOS = the whole context: no room for a token.
        self.assertGenerateRejected(req("x" * (MAX_SEQLEN - 1), temperature=0.0))
        self.assertGenerateRejected(with_ids([65] * (MAX_SEQLEN + 1), temperature=0.0),
                                    "token_ids")

    def test_prompt_plus_max_tokens_over_context(self):
        n = len(FACT) + 1
        self.assertGenerateRejected(req(FACT, temperature=0.0, max_tokens=MAX_SEQLEN - n + 1),
                                    "sampling.max_tokens")
        # Exactly the context: fine.
        c = self.assertAccepted(req(FACT, temperature=0.0, max_tokens=MAX_SEQLEN - n,
                                    ignore_eos=True))
        self.assertEqual(len(c.token_ids), MAX_SEQLEN - n)
        # One token of room with max_tokens unset: default = context left.
        c = self.assertAccepted(req("x" * (MAX_SEQLEN - 2), temperature=0.0, ignore_eos=True))
        self.assertEqual(len(c.token_ids), 1)

    def test_one_megabyte_prompt(self):
        self.assertGenerateRejected(req("a" * (1 << 20), temperature=0.0), "text")

    def test_prompt_over_max_prompt_bytes(self):
        lim = SRV.model_info().limits
        big = "a" * (lim.max_prompt_bytes + 1)
        self.assertRejected(SRV.stub.Complete, req(big, temperature=0.0), "text")
        self.assertRejected(SRV.stub.Tokenize, pb.TokenizeRequest(text=big), "text")

    def test_request_over_max_request_bytes(self):
        lim = SRV.model_info().limits
        big = "a" * (lim.max_request_bytes + 1024)
        self.assertRejected(SRV.stub.Complete, req(big, temperature=0.0),
                            code=grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_token_ids_out_of_vocab(self):
        self.assertGenerateRejected(with_ids([256, 84, 104, VOCAB, 1], temperature=0.0),
                                    "token_ids[3]")
        self.assertGenerateRejected(with_ids([-1, 84], temperature=0.0), "token_ids[0]")
        self.assertGenerateRejected(with_ids([256, 84, 1 << 30], temperature=0.0),
                                    "token_ids[2]")

    # -- sampling ------------------------------------------------------------

    def test_max_tokens(self):
        self.assertGenerateRejected(req(max_tokens=0), "sampling.max_tokens")
        self.assertGenerateRejected(req(max_tokens=1 << 30), "sampling.max_tokens")
        self.assertGenerateRejected(req(max_tokens=-5), "sampling.max_tokens")

    def test_temperature(self):
        self.assertGenerateRejected(req(temperature=-1.0), "sampling.temperature")
        self.assertGenerateRejected(req(temperature=float("nan")), "sampling.temperature")
        self.assertGenerateRejected(req(temperature=float("inf")), "sampling.temperature")

    def test_top_p(self):
        self.assertGenerateRejected(req(top_p=0.0), "sampling.top_p")
        self.assertGenerateRejected(req(top_p=1.5), "sampling.top_p")
        self.assertGenerateRejected(req(top_p=-0.1), "sampling.top_p")
        self.assertAccepted(req(top_p=1.0, max_tokens=3, seed=1))

    def test_other_sampling_fields(self):
        self.assertGenerateRejected(req(top_k=-1), "sampling.top_k")
        self.assertGenerateRejected(req(min_p=1.5), "sampling.min_p")
        self.assertGenerateRejected(req(min_p=-0.5), "sampling.min_p")
        self.assertGenerateRejected(req(repetition_penalty=0.0), "sampling.repetition_penalty")
        self.assertGenerateRejected(req(repetition_penalty=11.0),
                                    "sampling.repetition_penalty")
        self.assertGenerateRejected(req(frequency_penalty=2.5), "sampling.frequency_penalty")
        self.assertGenerateRejected(req(presence_penalty=-2.5), "sampling.presence_penalty")
        self.assertGenerateRejected(req(max_tokens=4, min_tokens=5), "sampling.min_tokens")
        self.assertGenerateRejected(req(min_tokens=-1), "sampling.min_tokens")
        self.assertAccepted(req(temperature=0.5, top_k=5, min_p=0.1, repetition_penalty=1.2,
                                frequency_penalty=0.5, presence_penalty=-0.5, seed=3,
                                max_tokens=4, min_tokens=4))

    def test_logprobs(self):
        self.assertGenerateRejected(req(temperature=0.0, max_tokens=3, logprobs=21),
                                    "sampling.logprobs")
        self.assertGenerateRejected(req(temperature=0.0, max_tokens=3, logprobs=-1),
                                    "sampling.logprobs")
        c = self.assertAccepted(req(temperature=0.0, max_tokens=3, logprobs=20))
        self.assertEqual([len(t.top) for t in c.top_logprobs], [20] * len(c.token_ids))

    def test_stop_strings(self):
        self.assertGenerateRejected(req(stop=["s%d" % i for i in range(10000)]),
                                    "sampling.stop")
        self.assertGenerateRejected(req(stop=["s%d" % i for i in range(65)]), "sampling.stop")
        self.assertGenerateRejected(req(stop=["ok", "x" * 257]), "sampling.stop[1]")
        self.assertGenerateRejected(req(stop=["ok", "fine", ""]), "sampling.stop[2]")
        # The limits themselves are fine.
        self.assertAccepted(req(temperature=0.0, max_tokens=3,
                                stop=[("%02d" % i) * 128 for i in range(64)]))

    def test_stop_token_ids(self):
        self.assertGenerateRejected(req(stop_token_ids=[10, VOCAB]),
                                    "sampling.stop_token_ids[1]")
        self.assertGenerateRejected(req(stop_token_ids=[-3]), "sampling.stop_token_ids[0]")
        self.assertGenerateRejected(req(stop_token_ids=list(range(65))),
                                    "sampling.stop_token_ids")

    def test_request_id(self):
        r = req(temperature=0.0, max_tokens=2)
        r.request_id = "has space"
        self.assertGenerateRejected(r, "request_id")
        r.request_id = "x" * 129
        self.assertGenerateRejected(r, "request_id")
        r.request_id = "tab\there"
        self.assertGenerateRejected(r, "request_id")
        r.request_id = "x" * 128
        self.assertEqual(self.assertAccepted(r).request_id, "x" * 128)

    # -- chat ----------------------------------------------------------------

    def test_chat(self):
        for call in (SRV.stub.ChatComplete, SRV.stub.Chat):
            self.assertRejected(call, pb.ChatRequest(sampling=greedy(3)), "messages")
            self.assertRejected(call, chat(("user", "hi"), ("bot", "x")), "messages[1].role")
            self.assertRejected(call, chat(("User", "hi")), "messages[0].role")
            self.assertRejected(call, chat(("user", "x" * 300), temperature=0.0))
            self.assertRejected(call, chat(("user", "hi"), top_p=0.0), "sampling.top_p")

    # -- invalid UTF-8 (the protobuf runtime refuses to parse) ---------------

    def test_invalid_utf8_text(self):
        msg = pb.GenerateRequest(text="PLACEHOLDER-TEXT", sampling=greedy(3))
        data = patch_utf8(msg, "PLACEHOLDER-TEXT")
        for method, streaming in (("Complete", False), ("Generate", True)):
            e = raw_call(method, data, streaming=streaming)
            self.assertIsNotNone(e, method)
            self.assertEqual(e.code(), INVALID, "%s: %s %r" % (method, e.code(), e.details()))
            self.assertTrue(names_field(e.details(), "text"), e.details())
            self.assertServing()
            # Logged like every other request, though no handler saw it.
            line = SRV.wait_log("request id=- method=%s status=INVALID_ARGUMENT error=\"request "
                                "does not parse: string field 'memserve.v1.GenerateRequest.text'"
                                % method)
            self.assertIsNotNone(line, SRV.stderr_tail())
        # memserve reports the error itself: protobuf's own multi-line dump is not
        # on stderr, and every line is one of ours (timestamp, level).
        self.assertNotIn("[libprotobuf", SRV.stderr_text())
        for ln in SRV.stderr_text().splitlines():
            self.assertRegex(ln, r"^\d{4}-\d\d-\d\dT[\d:.]+Z (INFO|WARNING|ERROR) ")
        # The same bytes with valid UTF-8 go through (so the test itself is sound).
        self.assertIsNone(raw_call("Complete", msg.SerializeToString()))

    def test_invalid_utf8_other_fields(self):
        cases = [
            ("ChatComplete", pb.ChatRequest(messages=[pb.ChatMessage(
                role="user", content="PLACEHOLDER-CHAT")], sampling=greedy(3)),
             "PLACEHOLDER-CHAT", "content"),
            ("Tokenize", pb.TokenizeRequest(text="PLACEHOLDER-TOK"), "PLACEHOLDER-TOK", "text"),
            ("Complete", pb.GenerateRequest(text="hi", sampling=pb.SamplingParams(
                temperature=0.0, max_tokens=3, stop=["PLACEHOLDER-STOP"])),
             "PLACEHOLDER-STOP", "stop"),
            ("Complete", pb.GenerateRequest(text="hi", sampling=greedy(3),
                                            request_id="PLACEHOLDER-RID"),
             "PLACEHOLDER-RID", "request_id"),
        ]
        for method, msg, placeholder, field in cases:
            e = raw_call(method, patch_utf8(msg, placeholder))
            self.assertIsNotNone(e, method)
            self.assertEqual(e.code(), INVALID, "%s: %s %r" % (method, e.code(), e.details()))
            self.assertTrue(names_field(e.details(), field), e.details())
            self.assertServing()

    def test_garbage_bytes(self):
        # Not a protobuf message at all.
        e = raw_call("Complete", b"\xff\xff\xff\xff\x0f")
        self.assertIsNotNone(e)
        self.assertEqual(e.code(), INVALID, "%s %r" % (e.code(), e.details()))
        self.assertServing()

    # -- last: nothing left behind --------------------------------------------

    def test_zz_status_clean_afterwards(self):
        st = SRV.wait_idle(timeout=2.0)
        self.assertEqual(st.state, pb.SERVING_STATE_SERVING)
        self.assertEqual(st.kv_usage, 0.0)
        self.assertEqual(SRV.check_health(""), SERVING)


def _short(msg):
    s = " ".join(str(msg).split())
    return s if len(s) < 200 else s[:200] + "..."


if __name__ == "__main__":
    harness.main()
