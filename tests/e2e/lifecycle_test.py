"""End-to-end life-cycle tests of `memserve serve`: cancellation and deadlines
free their KV blocks, a full queue answers RESOURCE_EXHAUSTED at once, SIGTERM
drains (with and without hitting --shutdown_timeout), and health / state go
LOADING -> SERVING while the model loads, with the "ready" log line only once
it has loaded (docs/api.md, docs/operations.md).

The server's --debug_step_delay (sleep after each engine step) holds requests
in flight long enough to observe; --debug_load_delay holds the LOADING state.

Run: bazel test //tests/e2e:lifecycle_test, or by hand (see harness.py).
"""
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import harness  # noqa: E402
from harness import pb, greedy, SERVING, NOT_SERVING, SERVICE  # noqa: E402

PROMPT = "Hi"  # 3 tokens with BOS


def long_request(max_tokens=100, rid=""):
    return pb.GenerateRequest(text=PROMPT, sampling=greedy(max_tokens, ignore_eos=True),
                              request_id=rid)


class StreamThread(threading.Thread):
    """Reads a Generate stream in the background; `first` is set at its first token."""

    def __init__(self, stub, req, timeout=60):
        super().__init__(daemon=True)
        self.call = stub.Generate(req, timeout=timeout)
        self.first = threading.Event()
        self.result = None

    def run(self):
        self.result = harness.read_stream(self.call, lambda r: self.first.set())
        self.first.set()


def wait_all(threads, timeout):
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            raise AssertionError("stream still running after %.0f s" % timeout)


class SlowServerTest(unittest.TestCase):
    """One server whose engine sleeps 20 ms after each step."""
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server("--debug_step_delay", "20ms", name="slow").start()

    @classmethod
    def tearDownClass(cls):
        if cls.srv is not None:
            rc = cls.srv.stop(timeout=30)
            print("slow: exit code %s; stderr tail:\n%s" % (rc, cls.srv.stderr_tail(5)))
            if rc != 0:
                raise AssertionError("server exit code %s" % rc)

    def test_cancel_frees_blocks(self):
        srv = self.srv
        srv.wait_idle()
        served = srv.status().requests_served
        call = srv.stub.Generate(long_request(120, "e2e-cancel"), timeout=60)
        got = 0
        for msg in call:
            self.assertEqual(msg.WhichOneof("event"), "token")
            got += 1
            if got == 2:
                break
        st = srv.status()
        self.assertEqual(st.running, 1, st)
        self.assertGreater(st.kv_blocks_used, 0, st)
        call.cancel()
        t0 = time.monotonic()
        srv.wait_idle(timeout=2.0)
        print("cancel: idle after %.0f ms" % ((time.monotonic() - t0) * 1000))
        self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)
        self.assertEqual(srv.status().requests_served, served, "a cancelled call was counted")
        # Still serving.
        c = srv.stub.Complete(pb.GenerateRequest(text=PROMPT, sampling=greedy(3)), timeout=30)
        self.assertEqual(len(c.token_ids), 3)

    def test_cancel_unary(self):
        srv = self.srv
        srv.wait_idle()
        fut = srv.stub.Complete.future(long_request(120), timeout=60)
        srv.wait_status(lambda s: s.running == 1 and s.kv_blocks_used > 0, timeout=5,
                        what="request running")
        fut.cancel()
        srv.wait_idle(timeout=2.0)

    def test_deadline_exceeded(self):
        srv = self.srv
        srv.wait_idle()
        served = srv.status().requests_served
        t0 = time.monotonic()
        e = harness.rpc_error(srv.stub.Complete, long_request(120, "e2e-deadline"), timeout=0.3)
        self.assertIsNotNone(e, "a 2.4 s request finished within a 0.3 s deadline")
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e)
        self.assertLess(time.monotonic() - t0, 2.0)
        # Dropped by the server, not only by the client: it had > 2 s of tokens left.
        srv.wait_idle(timeout=1.0)
        # Streaming: tokens arrive, then DEADLINE_EXCEEDED and no final.
        r = harness.read_stream(srv.stub.Generate(long_request(120), timeout=0.5))
        self.assertEqual(r.code, grpc.StatusCode.DEADLINE_EXCEEDED, r)
        self.assertIsNone(r.final)
        self.assertGreater(len(r.tokens), 0)
        self.assertLess(len(r.tokens), 120)
        srv.wait_idle(timeout=1.0)
        self.assertEqual(srv.status().requests_served, served)

    def test_deadline_while_queued(self):
        # Deadlines of 1 ms expire before or right after the request reaches the engine;
        # whichever it is, the request must leave nothing behind.
        srv = self.srv
        srv.wait_idle()
        for _ in range(3):
            e = harness.rpc_error(srv.stub.Complete, long_request(120), timeout=0.001)
            self.assertIsNotNone(e)
            self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e)
        srv.wait_idle(timeout=2.0)

    def test_timings_include_queue(self):
        srv = self.srv
        srv.wait_idle()
        c = srv.stub.Complete(long_request(10), timeout=30)
        t = c.timings
        self.assertLessEqual(0.0, t.queue_ms)
        self.assertLessEqual(t.queue_ms, t.time_to_first_token_ms)
        self.assertLessEqual(t.time_to_first_token_ms, t.total_ms)
        # 10 steps of >= 20 ms each.
        self.assertGreaterEqual(t.total_ms, 9 * 20.0, t)


class QueueFullTest(unittest.TestCase):

    def test_queue_full(self):
        with harness.Server("--max_batch_size", "1", "--max_queue", "1",
                            "--debug_step_delay", "20ms", name="queue") as srv:
            lim = srv.model_info().limits
            self.assertEqual(lim.max_batch_size, 1)
            self.assertEqual(lim.max_queue, 1)
            a = StreamThread(srv.stub, long_request(40, "q-a"))
            a.start()
            srv.wait_status(lambda s: s.running == 1, what="first request running")
            b = StreamThread(srv.stub, long_request(40, "q-b"))
            b.start()
            srv.wait_status(lambda s: s.running == 1 and s.waiting == 1,
                            what="second request waiting")
            for call in (srv.stub.Complete, srv.stub.Generate):
                t0 = time.monotonic()
                e = harness.rpc_error(call, long_request(5, "q-c"), timeout=30)
                dt = time.monotonic() - t0
                self.assertIsNotNone(e, "third request accepted with a full queue")
                self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e)
                self.assertLess(dt, 1.0, "RESOURCE_EXHAUSTED took %.2f s" % dt)
            st = srv.status()
            self.assertEqual((st.running, st.waiting), (1, 1), st)
            wait_all([a, b], 30)
            for t in (a, b):
                self.assertEqual(t.result.code, grpc.StatusCode.OK, t.result)
                self.assertIsNotNone(t.result.final)
                self.assertEqual(len(t.result.tokens), 40)
            # The second one waited for the first.
            self.assertGreater(b.result.final.timings.queue_ms, 100.0, b.result.final)
            srv.wait_idle()

            # A queued request whose deadline passes leaves the queue at once (while the
            # running one goes on), and so does a cancelled queued one.
            c = StreamThread(srv.stub, long_request(60, "q-c"))
            c.start()
            srv.wait_status(lambda s: s.running == 1, what="request running")
            t0 = time.monotonic()
            e = harness.rpc_error(srv.stub.Complete, long_request(5, "q-d"), timeout=0.3)
            self.assertIsNotNone(e)
            self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e)
            srv.wait_status(lambda s: s.waiting == 0, timeout=0.5, what="expired request gone")
            fut = srv.stub.Complete.future(long_request(5, "q-e"), timeout=30)
            srv.wait_status(lambda s: s.waiting == 1, what="request queued")
            fut.cancel()
            st = srv.wait_status(lambda s: s.waiting == 0, timeout=0.5,
                                 what="cancelled request gone")
            self.assertEqual(st.running, 1, "the running request should still run")
            self.assertTrue(c.is_alive())
            self.assertLess(time.monotonic() - t0, 1.1, "the running request was too short")
            wait_all([c], 30)
            self.assertIsNotNone(c.result.final, c.result)
            srv.wait_idle()
            # Room again.
            c = srv.stub.Complete(long_request(3), timeout=30)
            self.assertEqual(len(c.token_ids), 3)
            self.assertEqual(srv.stop(timeout=30), 0)


class DrainTest(unittest.TestCase):

    def test_sigterm_drains_in_flight(self):
        with harness.Server("--debug_step_delay", "20ms", name="drain") as srv:
            streams = [StreamThread(srv.stub, long_request(60, "d%d" % i)) for i in range(3)]
            for s in streams:
                s.start()
            for s in streams:
                self.assertTrue(s.first.wait(10), "no first token")
            t0 = time.monotonic()
            srv.signal()
            # Readiness goes NOT_SERVING while the streams (>= 1.1 s left) still run.
            deadline = time.monotonic() + 1.0
            ready = SERVING
            while time.monotonic() < deadline:
                ready = srv.check_health(SERVICE)
                if ready == NOT_SERVING:
                    break
                time.sleep(0.01)
            self.assertEqual(ready, NOT_SERVING, "readiness still SERVING after SIGTERM")
            self.assertEqual(srv.check_health(""), SERVING, "liveness must stay SERVING")
            st = srv.status()
            self.assertEqual(st.state, pb.SERVING_STATE_DRAINING)
            self.assertGreater(st.running, 0)
            self.assertTrue(all(s.is_alive() for s in streams), "streams ended too early")
            for call in (srv.stub.Complete, srv.stub.Generate):
                e = harness.rpc_error(call, long_request(3), timeout=10)
                self.assertIsNotNone(e, "new request accepted while draining")
                self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e)
            wait_all(streams, 30)
            for s in streams:
                r = s.result
                self.assertEqual(r.code, grpc.StatusCode.OK, r)
                self.assertIsNotNone(r.final, r)
                self.assertEqual(r.final.finish_reason, pb.FINISH_REASON_LENGTH)
                self.assertEqual(len(r.tokens), 60)
            rc = srv.wait_exit(timeout=30)
            print("drain: exit %.2f s after SIGTERM" % (time.monotonic() - t0))
            self.assertEqual(rc, 0, srv.stderr_tail())

    def test_drain_timeout(self):
        with harness.Server("--debug_step_delay", "50ms", "--shutdown_timeout", "0.5s",
                            name="drain_timeout") as srv:
            streams = [StreamThread(srv.stub, long_request(120, "dt%d" % i)) for i in range(2)]
            for s in streams:
                s.start()
            for s in streams:
                self.assertTrue(s.first.wait(10), "no first token")
            t0 = time.monotonic()
            srv.signal()
            wait_all(streams, 10)
            dt = time.monotonic() - t0
            for s in streams:
                r = s.result
                self.assertEqual(r.code, grpc.StatusCode.UNAVAILABLE, r)
                self.assertIsNone(r.final)
                self.assertGreater(len(r.tokens), 0)
                self.assertLess(len(r.tokens), 120)
            self.assertLess(dt, 4.0, "streams ended %.2f s after SIGTERM (timeout 0.5 s)" % dt)
            rc = srv.wait_exit(timeout=10)
            self.assertEqual(rc, 0, srv.stderr_tail())

    def test_sigterm_idle_exits_zero(self):
        # Nothing in flight, but a client connected (as a load balancer or a health prober
        # would be): the server has nothing to drain and should exit promptly.
        # A bare number of seconds is a duration (docs/operations.md).
        with harness.Server("--shutdown_timeout", "5", name="idle") as srv:
            self.assertEqual(srv.status().running, 0)
            t0 = time.monotonic()
            self.assertEqual(srv.stop(timeout=15), 0, srv.stderr_tail())
            dt = time.monotonic() - t0
            self.assertLess(dt, 3.0, "an idle server took %.1f s to exit after SIGTERM" % dt)
            self.assertIn(" INFO draining signal=15 timeout=5s", srv.stderr_text())


class LoadingTest(unittest.TestCase):

    def test_health_transitions_while_loading(self):
        t0 = time.monotonic()
        # start() returns once the port file exists, without waiting for readiness.
        with harness.Server("--debug_load_delay", "3s",
                            name="loading").start(wait_ready=False) as srv:
            # Watch readiness from the start.
            watched = []
            watch = srv.health.Watch(harness.health_pb2.HealthCheckRequest(service=SERVICE),
                                     timeout=30)

            def watcher():
                try:
                    for m in watch:
                        watched.append(m.status)
                        if m.status == SERVING:
                            return
                except grpc.RpcError:
                    pass

            wt = threading.Thread(target=watcher, daemon=True)
            wt.start()

            self.assertEqual(srv.check_health(""), SERVING)
            self.assertEqual(srv.check_health(SERVICE), NOT_SERVING)
            st = srv.status()
            self.assertEqual(st.state, pb.SERVING_STATE_LOADING)
            self.assertEqual(st.running, 0)
            for fn, req in ((srv.stub.Complete, long_request(3)),
                            (srv.stub.Generate, long_request(3)),
                            (srv.stub.ChatComplete,
                             pb.ChatRequest(messages=[pb.ChatMessage(role="user",
                                                                     content="x")])),
                            (srv.stub.GetModelInfo, pb.GetModelInfoRequest())):
                e = harness.rpc_error(fn, req, timeout=10)
                self.assertIsNotNone(e, fn)
                self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e)
            # The port answers health checks, but the "ready" line waits for the model.
            self.assertIn(" INFO loading model_dir=", srv.stderr_text())
            self.assertNotIn(" INFO ready ", srv.stderr_text())
            self.assertLess(time.monotonic() - t0, 2.8, "checks too slow to see LOADING")
            # Poll until ready; liveness SERVING throughout.
            states = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                self.assertEqual(srv.check_health(""), SERVING)
                ready = srv.check_health(SERVICE)
                states.append(ready)
                if ready == SERVING:
                    break
                time.sleep(0.05)
            self.assertEqual(states[-1], SERVING, "never became ready")
            self.assertGreaterEqual(time.monotonic() - t0, 2.9, "ready before the load delay")
            self.assertEqual(srv.status().state, pb.SERVING_STATE_SERVING)
            line = srv.wait_log(" INFO ready ", timeout=5)
            self.assertIsNotNone(line, srv.stderr_tail())
            self.assertIn(" port=%d " % srv.port, line)
            c = srv.stub.Complete(pb.GenerateRequest(text=PROMPT, sampling=greedy(3)),
                                  timeout=30)
            self.assertEqual(len(c.token_ids), 3)
            wt.join(10)
            dedup = [s for i, s in enumerate(watched) if i == 0 or watched[i - 1] != s]
            self.assertEqual(dedup, [NOT_SERVING, SERVING], "Watch saw %s" % watched)
            watch.cancel()
            self.assertEqual(srv.stop(timeout=30), 0)


if __name__ == "__main__":
    harness.main()
