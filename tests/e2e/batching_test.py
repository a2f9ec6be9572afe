"""End-to-end batch invariance of `memserve serve`: requests running together
(continuous batching, chunked prefill, preemption under a tiny KV pool) give
exactly the tokens they give alone (docs/api.md, "SamplingParams": "a seeded
request produces the same tokens whether it runs alone or in a full batch").

Run: bazel test //tests/e2e:batching_test, or by hand (see harness.py).
"""
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import harness  # noqa: E402
from harness import pb  # noqa: E402

FACTS = harness.load_facts()
MAX_SEQLEN = harness.load_config()["max_seqlen"]


def fact_requests(n, stride=31):
    """n greedy requests on different fact prompts, with mixed lengths: even ones
    end at EOS, odd ones ignore EOS and run to max_tokens (16..39)."""
    reqs = []
    for i in range(n):
        f = FACTS[(i * stride) % len(FACTS)]
        s = pb.SamplingParams(temperature=0.0, max_tokens=16 + (i * 7) % 24,
                              ignore_eos=bool(i % 2), logprobs=2 if i % 5 == 0 else 0)
        reqs.append(pb.GenerateRequest(text=f["prompt"], sampling=s, request_id="b%d" % i))
    return reqs


def seeded_requests(n):
    """n sampled requests: 8 prompts x several seeds each."""
    reqs = []
    for i in range(n):
        f = FACTS[(i % 8) * 5]
        s = pb.SamplingParams(temperature=0.9, top_p=0.95, seed=1000 + i, max_tokens=24,
                              ignore_eos=True)
        reqs.append(pb.GenerateRequest(text=f["prompt"], sampling=s, request_id="s%d" % i))
    return reqs


class BatchCase(unittest.TestCase):
    flags = ()
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server(*cls.flags, name=cls.__name__).start()

    @classmethod
    def tearDownClass(cls):
        if cls.srv is not None:
            rc = cls.srv.stop(timeout=30)
            print("%s: exit code %s; stderr tail:\n%s" % (cls.__name__, rc,
                                                          cls.srv.stderr_tail(5)))
            if rc != 0:
                raise AssertionError("%s: server exit code %s" % (cls.__name__, rc))

    def solo(self, reqs):
        """Each request alone, one after another (Complete)."""
        out = []
        for req in reqs:
            c = self.srv.stub.Complete(req, timeout=60)
            self.assertEqual(c.usage.completion_tokens, len(c.token_ids))
            out.append(c)
        return out

    def concurrent_streams(self, reqs, sample_status=False):
        """All requests at once, one thread each (Generate streams). Optionally
        samples GetServerStatus while they run; returns (results, statuses)."""
        statuses = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                try:
                    statuses.append(self.srv.status(timeout=5))
                except grpc.RpcError:
                    pass
                stop.wait(0.005)

        t = None
        if sample_status:
            t = threading.Thread(target=sampler, daemon=True)
            t.start()
        try:
            results = harness.run_threads(
                [lambda r=r: harness.generate(self.srv.stub, r, timeout=120) for r in reqs],
                timeout=180)
        finally:
            stop.set()
            if t is not None:
                t.join(10)
        return results, statuses

    def check_equal(self, reqs, solo, conc):
        mismatches = []
        for req, c, r in zip(reqs, solo, conc):
            self.assertEqual(r.code, grpc.StatusCode.OK, "%s: %r" % (req.request_id, r))
            self.assertIsNotNone(r.final, req.request_id)
            self.assertEqual(r.final.request_id, req.request_id)
            if r.ids != list(c.token_ids):
                mismatches.append("%s: solo %s, batched %s" % (req.request_id,
                                                              list(c.token_ids), r.ids))
                continue
            self.assertEqual(r.text, c.text, req.request_id)
            self.assertEqual(r.final.finish_reason, c.finish_reason, req.request_id)
            self.assertEqual(r.final.usage, c.usage, req.request_id)
            for tok, lp in zip(r.tokens, c.token_logprobs):
                self.assertAlmostEqual(tok.logprob, lp, places=3, msg=req.request_id)
        self.assertEqual(mismatches, [], "%d of %d requests differ from their solo run:\n%s" %
                         (len(mismatches), len(reqs), "\n".join(mismatches)))

    def run_invariance(self, reqs):
        solo = self.solo(reqs)
        conc, statuses = self.concurrent_streams(reqs, sample_status=True)
        self.check_equal(reqs, solo, conc)
        for st in statuses:
            self.assertLessEqual(st.kv_blocks_used, st.kv_blocks_total)
            self.assertLessEqual(st.running, self.srv_limits().max_batch_size)
        self.srv.wait_idle(timeout=5)
        return solo, conc, statuses

    def srv_limits(self):
        if not hasattr(self, "_limits"):
            self._limits = self.srv.model_info().limits
        return self._limits


class DefaultFlagsTest(BatchCase):
    flags = ()

    def test_64_concurrent_greedy_streams(self):
        reqs = fact_requests(64)
        solo, conc, statuses = self.run_invariance(reqs)
        # Mixed finish reasons, as intended.
        reasons = {c.finish_reason for c in solo}
        self.assertIn(pb.FINISH_REASON_LENGTH, reasons)
        self.assertIn(pb.FINISH_REASON_EOS, reasons)
        # Some batching happened (a sample saw more than one request in the engine).
        self.assertGreater(max([s.running + s.waiting for s in statuses] + [0]), 1,
                           "never saw two requests in flight")

    def test_seeded_sampling_batch_invariant(self):
        reqs = seeded_requests(32)
        solo, _, _ = self.run_invariance(reqs)
        # Sampling does something: the 4 seeds of some prompt do not all agree, and some
        # output differs from greedy.
        by_prompt = {}
        for req, c in zip(reqs, solo):
            by_prompt.setdefault(req.text, set()).add(tuple(c.token_ids))
        self.assertTrue(any(len(v) > 1 for v in by_prompt.values()),
                        "different seeds always gave the same tokens")
        differs = 0
        for req, c in zip(reqs[:8], solo[:8]):
            g = pb.GenerateRequest()
            g.CopyFrom(req)
            g.sampling.temperature = 0.0
            g.sampling.ClearField("seed")
            gc = self.srv.stub.Complete(g, timeout=60)
            differs += list(gc.token_ids) != list(c.token_ids)
        self.assertGreater(differs, 0, "temperature 0.9 always gave the greedy tokens")
        # Same seed again: same tokens.
        again = self.srv.stub.Complete(reqs[3], timeout=60)
        self.assertEqual(list(again.token_ids), list(solo[3].token_ids))


class SmallStepsTest(BatchCase):
    """Prefill chunks of 8 tokens and at most 64 tokens per step: prompts are
    prefilled over several steps, mixed with other requests' decodes."""
    flags = ("--max_num_tokens", "64", "--prefill_chunk", "8", "--block_size", "4")

    def test_flags_reported(self):
        self.assertEqual(self.srv_limits().max_num_tokens, 64)
        st = self.srv.status()
        self.assertEqual(st.kv_block_tokens, 4)

    def test_64_concurrent_greedy_streams(self):
        self.run_invariance(fact_requests(64, stride=37))

    def test_seeded_sampling_batch_invariant(self):
        self.run_invariance(seeded_requests(32))


class PreemptionTest(BatchCase):
    """A KV pool of 40 blocks x 4 tokens = 160 tokens: enough for one full
    context (128) but far too little for 24 requests of ~80 tokens each, so the
    scheduler must preempt (and later resume) running requests."""
    NUM_BLOCKS = 40
    flags = ("--num_blocks", str(NUM_BLOCKS), "--block_size", "4")

    def test_tiny_kv_pool(self):
        reqs = []
        for i in range(24):
            f = FACTS[(i * 53) % len(FACTS)]
            max_tokens = min(50, MAX_SEQLEN - len(f["prompt"].encode()) - 1)
            s = pb.SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
            if i % 3 == 0:  # seeded sampling must survive preemption too
                s = pb.SamplingParams(temperature=0.9, top_p=0.95, seed=7 + i,
                                      max_tokens=max_tokens, ignore_eos=True)
            reqs.append(pb.GenerateRequest(text=f["prompt"], sampling=s, request_id="p%d" % i))
        st = self.srv.status()
        self.assertEqual(st.kv_blocks_total, self.NUM_BLOCKS)
        self.assertEqual(st.kv_block_tokens, 4)
        solo, conc, statuses = self.run_invariance(reqs)
        for c in solo:
            self.assertEqual(c.finish_reason, pb.FINISH_REASON_LENGTH)
        # The pool filled up at some point (else nothing was tested).
        peak = max([s.kv_blocks_used for s in statuses] + [0])
        print("peak kv_blocks_used %d of %d; max running %d" % (
            peak, self.NUM_BLOCKS, max([s.running for s in statuses] + [0])))
        self.assertGreater(peak, self.NUM_BLOCKS // 2, "the KV pool never filled up")
        st = self.srv.wait_idle(timeout=5)
        self.assertGreater(st.preemptions, 0, "no request was preempted")
        self.assertEqual(st.kv_usage, 0.0)


if __name__ == "__main__":
    harness.main()
