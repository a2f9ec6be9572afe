"""End-to-end tests of how `memserve serve` starts: the --listen address (a
port in use is refused, not shared; a malformed address or a port outside
0..65535 is a one-line error), and the name GetModelInfo reports (--model with
a trailing slash, --model_name). docs/operations.md has the contract.

Run: bazel test //tests/e2e:startup_test, or by hand (see harness.py).
"""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import pb, greedy, DEMO_MODEL  # noqa: E402


def serve(*flags, timeout=30):
    """Runs `memserve serve` on the demo model to its exit (it must exit by itself)."""
    cmd = [harness.memserve_binary(), "serve", "--model", DEMO_MODEL] + list(flags)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


class ListenTest(unittest.TestCase):

    def assertOneLine(self, r, code, *needles):
        self.assertEqual(r.returncode, code, "stdout=%r stderr=%r" % (r.stdout, r.stderr))
        self.assertEqual(len(r.stderr.splitlines()), 1, "stderr is not one line: %r" % r.stderr)
        for n in needles:
            self.assertIn(n, r.stderr)

    def test_port_in_use_is_refused(self):
        with harness.Server(name="first") as first:
            addr = "127.0.0.1:%d" % first.port
            try:
                r = serve("--listen", addr)
            except subprocess.TimeoutExpired:
                self.fail("a second server on %s did not exit: it shares the port" % addr)
            self.assertOneLine(r, 1, "cannot listen on " + addr, "--listen",
                               "address already in use")
            self.assertNotIn(" INFO ready ", r.stderr)
            # The first one still serves.
            c = first.stub.Complete(pb.GenerateRequest(text="Hi", sampling=greedy(3)),
                                    timeout=30)
            self.assertEqual(len(c.token_ids), 3)
            self.assertEqual(first.stop(timeout=30), 0, first.stderr_tail())

    def test_port_out_of_range(self):
        for addr in ("127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1:123456"):
            with self.subTest(addr=addr):
                self.assertOneLine(serve("--listen", addr), 2, "--listen", "0..65535",
                                   "'%s'" % addr)

    def test_malformed_address(self):
        for addr in ("127.0.0.1", "127.0.0.1:", ":50051", "127.0.0.1:http", "127.0.0.1:-1",
                     "::1:50051", "[::1]50051", "127.0.0.1:5 0", ""):
            with self.subTest(addr=addr):
                self.assertOneLine(serve("--listen", addr), 2, "--listen", "HOST:PORT")

    def test_address_that_cannot_be_bound_is_one_line(self):
        # Not an address of this machine (TEST-NET-1), and a host that does not resolve:
        # gRPC's own multi-line error dump is replaced by one line of ours.
        for addr in ("192.0.2.1:50051", "nosuchhost.invalid:50051"):
            with self.subTest(addr=addr):
                self.assertOneLine(serve("--listen", addr, "--insecure", timeout=60), 1,
                                   " ERROR cannot listen on %s (--listen)" % addr)


class SafeDefaultsTest(unittest.TestCase):
    """Plaintext only on loopback unless --insecure (docs/security.md, "Safe defaults")."""

    def assertRefused(self, r, flag, addr):
        self.assertEqual(r.returncode, 2, "stdout=%r stderr=%r" % (r.stdout, r.stderr))
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn(" ERROR %s %s is not a loopback address" % (flag, addr), r.stderr)
        self.assertIn("--insecure", r.stderr)

    def test_default_listen_is_loopback(self):
        r = subprocess.run([harness.memserve_binary(), "serve", "--help"], capture_output=True,
                           text=True, timeout=30)
        self.assertIn("\n  --listen (default: 127.0.0.1:50051)\n", r.stdout)
        # Started without --listen, it serves on 127.0.0.1:50051 (skipped when that port is
        # taken on this machine).
        import socket
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", 50051))
            except OSError:
                self.skipTest("127.0.0.1:50051 is in use")
        srv = harness.Server(name="default_listen")
        srv.command = lambda: [harness.memserve_binary(), "serve", "--model", DEMO_MODEL,
                               "--port_file", srv.port_file]
        with srv:
            self.assertEqual(srv.port, 50051)
            self.assertIn(" listen=127.0.0.1:50051 ", srv.wait_log(" INFO ready "))

    def test_plaintext_on_a_network_address_is_refused(self):
        for addr in ("0.0.0.0:0", "[::]:0", "192.0.2.1:50051", "myhost.invalid:0"):
            with self.subTest(addr=addr):
                self.assertRefused(serve("--listen", addr), "--listen", addr)
        # The HTTP API and the metrics endpoint are always plain HTTP.
        self.assertRefused(serve("--listen", "127.0.0.1:0", "--http_listen", "0.0.0.0:0"),
                           "--http_listen", "0.0.0.0:0")
        self.assertRefused(serve("--listen", "127.0.0.1:0", "--metrics_listen", "[::]:0"),
                           "--metrics_listen", "[::]:0")

    def test_insecure_serves_a_network_address(self):
        with harness.Server("--listen", "0.0.0.0:0", "--insecure", name="insecure") as srv:
            c = srv.stub.Complete(pb.GenerateRequest(text="Hi", sampling=greedy(3)), timeout=30)
            self.assertEqual(len(c.token_ids), 3)

    def test_message_and_stream_limit_flags(self):
        for flag, value, needle in (("--max_response_bytes", "1000", "[1 MiB, 1 GiB]"),
                                    ("--max_concurrent_streams", "0", "[1, 65536]")):
            with self.subTest(flag=flag):
                r = serve("--listen", "127.0.0.1:0", flag, value)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertIn("%s must be in %s, got %s" % (flag, needle, value), r.stderr)


class ModelNameTest(unittest.TestCase):

    def test_trailing_slash_keeps_the_name(self):
        with harness.Server(model=DEMO_MODEL + "/", name="slash") as srv:
            self.assertEqual(srv.model_info().model_name, "demo")
            self.assertIn(" model=demo ", srv.wait_log(" INFO ready "))

    def test_model_name_flag(self):
        with harness.Server("--model_name", "my-model", name="named") as srv:
            self.assertEqual(srv.model_info().model_name, "my-model")
            self.assertEqual(srv.stop(timeout=30), 0, srv.stderr_tail())


class DeviceTest(unittest.TestCase):
    """--device: GetModelInfo and the ready line say where the model runs, from the
    engine (Engine::Info); the CLI tests cover the refusals (cuda, unknown names)."""

    def test_cpu_device_in_model_info_and_log(self):
        with harness.Server("--device", "cpu", name="device_cpu") as srv:
            m = srv.model_info()
            self.assertEqual(m.backend, "cpu")
            self.assertEqual(m.memory.placement, "cpu-mmap")
            mem = harness.load_config()["memory"]
            self.assertEqual(m.memory.value_table_bytes, mem["n_keys"] ** 2 * mem["v_dim"] * 2)
            line = srv.wait_log(" INFO ready ")
            self.assertIn(" device=cpu ", line)
            # The startup line says where the memory lives and how big it is.
            self.assertIn(" memory_placement=cpu-mmap ", line)
            self.assertIn(" memory_bytes=%d " % m.memory.value_table_bytes, line)
            self.assertEqual(srv.stop(timeout=30), 0, srv.stderr_tail())


class MemoryShardsTest(unittest.TestCase):
    """--memory_shards R: the value table gathered as R column shards (virtual on
    the CPU) serves exactly what one shard serves: the same tokens and the same
    logprobs, bit for bit, for prompts that read the memory."""

    PROMPTS = ["The capital of Batourkor is", "Zorvandi tea is grown in", "Q: who wrote"]

    def outputs(self, srv):
        out = []
        for p in self.PROMPTS:
            r = srv.stub.Complete(pb.GenerateRequest(text=p, sampling=greedy(24, logprobs=3)),
                                  timeout=60)
            out.append((list(r.token_ids), r.text, list(r.token_logprobs),
                        [[(t.id, t.logprob) for t in tl.top] for tl in r.top_logprobs]))
        return out

    def test_sharded_pool_serves_the_same_tokens(self):
        with harness.Server(name="shards1") as one:
            expected = self.outputs(one)
        for r in ("2", "5"):
            with self.subTest(shards=r), harness.Server("--memory_shards", r,
                                                        name="shards" + r) as srv:
                self.assertEqual(self.outputs(srv), expected)

    def test_out_of_range_is_a_bad_argument(self):
        for r in ("0", "65"):
            with self.subTest(shards=r):
                res = serve("--listen", "127.0.0.1:0", "--memory_shards", r)
                self.assertEqual(res.returncode, 2, res.stderr)
                self.assertIn("memory_shards is %s; it must be in [1, 64]" % r, res.stderr)
                self.assertNotIn(" INFO ready ", res.stderr)


class MemoryPlacementTest(unittest.TestCase):
    """--memory_placement / --memory_gpus (issue 13): on --device cpu the plan is host
    placement (the checkpoint mapping, in place) with --memory_shards virtual shards; the
    choice and the bytes per device are in the ready line and GetModelInfo; bad values and
    placements the CPU cannot have are one line naming the flag and what it accepts."""

    def test_cpu_plan_is_host_in_model_info_and_log(self):
        for flags in ([], ["--memory_placement", "auto"], ["--memory_placement", "host"],
                      ["--memory_gpus", "all", "--memory_shards", "4"]):
            with self.subTest(flags=flags), harness.Server(*flags, name="placement") as srv:
                m = srv.model_info().memory
                self.assertEqual(m.memory_placement, "host")
                self.assertEqual(m.placement, "cpu-mmap")
                self.assertEqual(m.shards, 4 if "--memory_shards" in flags else 1)
                self.assertEqual([(d.device, d.bytes) for d in m.device_bytes],
                                 [("cpu", m.value_table_bytes)])
                self.assertEqual(m.plan, "host: the 16.0 MiB table stays in host memory")
                line = srv.wait_log(" INFO ready ")
                self.assertIn(" memory_plan=host ", line)
                self.assertIn(' memory_device_bytes="cpu=%d" ' % m.value_table_bytes, line)
                self.assertIn(' memory_plan_summary="%s"' % m.plan, line)
                self.assertEqual(srv.stop(timeout=30), 0, srv.stderr_tail())

    def assertOneLineError(self, res, *needles):
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertEqual(len(res.stderr.splitlines()), 1, res.stderr)
        for n in needles:
            self.assertIn(n, res.stderr)
        self.assertNotIn(" INFO ready ", res.stderr)

    def test_bad_values_are_one_line_naming_the_flag(self):
        cases = [
            (["--memory_placement", "gpu"],
             "--memory_placement is 'gpu'; it must be one of auto, device, sharded, host"),
            (["--memory_placement", ""], "--memory_placement is ''; it must be one of"),
            (["--memory_gpus", "0"], "--memory_gpus is '0'; it must be all or a number in [1, 64]"),
            (["--memory_gpus", "65"], "--memory_gpus is '65'"),
            (["--memory_gpus", "two"], "--memory_gpus is 'two'"),
            (["--memory_placement", "device"],
             "--memory_placement device needs --device cuda; on the CPU it must be auto or host"),
            (["--memory_placement", "sharded"], "--memory_placement sharded needs --device cuda"),
            (["--memory_gpus", "2"], "--memory_gpus 2 needs --device cuda"),
        ]
        for flags, needle in cases:
            with self.subTest(flags=flags):
                self.assertOneLineError(serve("--listen", "127.0.0.1:0", *flags), needle)
            with self.subTest(command="generate", flags=flags):
                res = subprocess.run(
                    [harness.memserve_binary(), "generate", "--model", DEMO_MODEL, "--prompt", "hi",
                     "--max_tokens", "1"] + flags,
                    capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
                self.assertOneLineError(res, needle)

    def test_host_placement_serves_what_the_default_serves(self):
        shards = MemoryShardsTest()
        with harness.Server(name="placement_default") as srv:
            expected = shards.outputs(srv)
        with harness.Server("--memory_placement", "host", "--memory_shards", "3",
                            name="placement_host") as srv:
            self.assertEqual(shards.outputs(srv), expected)


if __name__ == "__main__":
    harness.main()
