"""End-to-end test harness: runs `memserve serve` as a child process and gives
tests gRPC stubs for it.

A test script does

    import harness
    from harness import pb, health_pb2

    srv = harness.Server("--max_batch_size", "8")   # extra serve flags
    srv.start()                                      # waits for readiness
    srv.stub.Complete(pb.GenerateRequest(...), timeout=60)
    rc = srv.stop()                                  # SIGTERM, wait, exit code

Every server the harness starts is killed when the Python process exits
(normally, by an uncaught exception or by SIGTERM / SIGINT), so a failing test
never leaves a server behind or hangs its Bazel run.

Finding things (under Bazel the test runs from the runfiles root, see
tests/run_python.sh; by hand it runs from the repository root):
  - the binary: --memserve PATH (the BUILD passes $(location //server:memserve)),
    else $MEMSERVE, else server/memserve, else bazel-bin/server/memserve;
  - the generated Python code: proto/ (runfiles) or bazel-bin/proto (by hand);
  - the demo model: models/demo.

By hand (after `bazel build //server:memserve //proto:memserve_py //proto:health_py`):
  /usr/bin/python3 tests/e2e/generate_test.py --memserve bazel-bin/server/memserve
"""
import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
for _p in (os.path.join(ROOT, "bazel-bin", "proto"), os.path.join(ROOT, "proto")):
    if os.path.isdir(_p):
        sys.path.insert(0, _p)

import grpc  # noqa: E402
from memserve.v1 import memserve_pb2 as pb  # noqa: E402
from memserve.v1 import memserve_pb2_grpc as pb_grpc  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402
from grpc_health.v1 import health_pb2_grpc  # noqa: E402

SERVICE = "memserve.v1.MemServe"
DEMO_MODEL = os.path.join(ROOT, "models", "demo")
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", -1)]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

_memserve_path = None
_live = []  # Server objects whose process may still run
_live_lock = threading.Lock()


def memserve_binary():
    global _memserve_path
    if _memserve_path:
        return _memserve_path
    candidates = [os.environ.get("MEMSERVE", ""), os.path.join(ROOT, "server", "memserve"),
                  os.path.join(ROOT, "bazel-bin", "server", "memserve")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            _memserve_path = os.path.abspath(c)
            return _memserve_path
    raise RuntimeError("memserve binary not found (pass --memserve PATH)")


def parse_args(argv=None):
    """Takes --memserve PATH out of argv (sys.argv by default); returns the rest
    for unittest.main."""
    global _memserve_path
    argv = list(sys.argv if argv is None else argv)
    rest = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--memserve" and i + 1 < len(argv):
            _memserve_path = os.path.abspath(argv[i + 1])
            i += 2
            continue
        if a.startswith("--memserve="):
            _memserve_path = os.path.abspath(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return rest


def take_path_arg(flag, default_bazel_bin=None):
    """Takes `flag PATH` out of sys.argv (the path of another binary a test
    drives, e.g. --cli); returns it absolute, else ROOT/bazel-bin/
    `default_bazel_bin` when given, else exits naming the flag."""
    argv = sys.argv
    if flag in argv and argv.index(flag) + 1 < len(argv):
        i = argv.index(flag)
        path = os.path.abspath(argv[i + 1])
        del argv[i:i + 2]
        return path
    if default_bazel_bin:
        return os.path.join(ROOT, "bazel-bin", default_bazel_bin)
    sys.exit("usage: %s --memserve PATH %s PATH [unittest args]" % (sys.argv[0], flag))


def main():
    """unittest.main with --memserve handled; verbose, so test.log shows each test."""
    import unittest
    argv = parse_args()
    unittest.main(argv=argv, verbosity=2)


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TEST_TMPDIR"))


def load_facts():
    with open(os.path.join(DEMO_MODEL, "facts.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_config():
    with open(os.path.join(DEMO_MODEL, "config.json")) as f:
        return json.load(f)


def _kill_all():
    with _live_lock:
        servers = list(_live)
    for s in servers:
        s.kill()


atexit.register(_kill_all)


def _on_signal(signum, frame):
    _kill_all()
    # Default action afterwards (so the exit status still says "signal").
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except (ValueError, OSError):
        pass


class ServerError(RuntimeError):
    pass


class Server:
    """One `memserve serve` process on 127.0.0.1 with a port picked by the OS."""

    def __init__(self, *flags, model=DEMO_MODEL, name="server", http=False,
                 credentials=None):
        """http=True also serves the HTTP API (--http_listen) on a free port
        (self.http_port). credentials: grpc.ChannelCredentials for the test's
        own channel (a server with --tls_cert); default: plaintext."""
        self.flags = list(flags)
        self.credentials = credentials
        self.http = http
        self.http_port = None
        self.model = model
        self.name = name
        self.dir = tmpdir("e2e_%s_" % name)
        self.port_file = os.path.join(self.dir, "port")
        self.http_port_file = os.path.join(self.dir, "http_port")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.proc = None
        self.port = None
        self.channel = None
        self.stub = None
        self.health = None
        self.returncode = None

    # -- life cycle ---------------------------------------------------------

    def command(self):
        cmd = [memserve_binary(), "serve", "--listen", "127.0.0.1:0",
               "--port_file", self.port_file]
        if self.model:
            cmd += ["--model", self.model]
        if self.http:
            cmd += ["--http_listen", "127.0.0.1:0", "--http_port_file", self.http_port_file]
        return cmd + self.flags

    def start(self, wait_ready=True, timeout=60.0):
        """Starts the process, waits for the port file (and, if wait_ready, for
        readiness SERVING). Raises ServerError with the stderr tail on failure."""
        assert self.proc is None, "started twice"
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._stdout, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL)
        with _live_lock:
            _live.append(self)
        try:
            self.port = self._wait_port(self.port_file, timeout)
            if self.http:
                self.http_port = self._wait_port(self.http_port_file, timeout)
            target = "127.0.0.1:%d" % self.port
            if self.credentials is None:
                self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
            else:
                self.channel = grpc.secure_channel(target, self.credentials,
                                                   options=CHANNEL_OPTIONS)
            self.stub = pb_grpc.MemServeStub(self.channel)
            self.health = health_pb2_grpc.HealthStub(self.channel)
            if wait_ready:
                self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_port(self, path, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError("%s exited with %d before writing its port file:\n%s" %
                                  (self.name, self.proc.returncode, self.stderr_tail()))
            try:
                with open(path) as f:
                    text = f.read().strip()
                if text:
                    port = int(text)
                    if not 0 < port < 65536:
                        raise ServerError("port file holds %r" % text)
                    return port
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise ServerError("%s wrote no port file in %.0f s:\n%s" %
                          (self.name, timeout, self.stderr_tail()))

    def wait_ready(self, timeout=60.0):
        """Polls readiness (health service memserve.v1.MemServe) until SERVING."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError("%s exited with %d while loading:\n%s" %
                                  (self.name, self.proc.returncode, self.stderr_tail()))
            try:
                last = self.check_health(SERVICE, timeout=2)
                if last == SERVING:
                    return
            except grpc.RpcError as e:
                last = e.code()
            time.sleep(0.05)
        raise ServerError("%s not ready after %.0f s (last: %r):\n%s" %
                          (self.name, timeout, last, self.stderr_tail()))

    def check_health(self, service="", timeout=5):
        """The health status (an enum int) of `service`; raises grpc.RpcError."""
        return self.health.Check(health_pb2.HealthCheckRequest(service=service),
                                 timeout=timeout).status

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=60.0):
        """Waits for the process to exit; returns its exit code, or kills it and
        raises ServerError after `timeout`."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError("%s did not exit within %.1f s:\n%s" %
                              (self.name, timeout, self.stderr_tail()))
        self._finish()
        return rc

    def stop(self, timeout=60.0):
        """SIGTERM, then wait; returns the exit code (negative: killed by a
        signal). Kills the process if it does not exit within `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self):
        """SIGKILL if still running; never raises."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - cleanup must not fail
            pass
        self._finish()

    def _finish(self):
        if self.proc is not None and self.proc.poll() is not None:
            self.returncode = self.proc.returncode
        with _live_lock:
            if self in _live:
                _live.remove(self)
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception:  # noqa: BLE001
                pass
            self.channel = None
        for f in ("_stderr", "_stdout"):
            h = getattr(self, f, None)
            if h is not None and not h.closed:
                h.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    # -- helpers ------------------------------------------------------------

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines=40):
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def status(self, timeout=10):
        return self.stub.GetServerStatus(pb.GetServerStatusRequest(), timeout=timeout)

    def model_info(self, timeout=10):
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout)

    def wait_idle(self, timeout=5.0):
        """Polls GetServerStatus until running == waiting == kv_blocks_used == 0;
        returns that status, or raises AssertionError with the last one."""
        deadline = time.monotonic() + timeout
        st = None
        while True:
            st = self.status()
            if st.running == 0 and st.waiting == 0 and st.kv_blocks_used == 0:
                return st
            if time.monotonic() >= deadline:
                raise AssertionError("server not idle after %.1f s: running=%d waiting=%d "
                                     "kv_blocks_used=%d" % (timeout, st.running, st.waiting,
                                                            st.kv_blocks_used))
            time.sleep(0.02)

    def wait_status(self, pred, timeout=5.0, what="condition"):
        """Polls GetServerStatus until pred(status); returns it or raises."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if pred(st):
                return st
            if time.monotonic() >= deadline:
                raise AssertionError("%s not reached in %.1f s; last status: %s" %
                                     (what, timeout, _one_line(st)))
            time.sleep(0.01)

    def wait_log(self, needle, timeout=5.0):
        """Waits until a stderr line contains `needle`; returns the line or None."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.stderr_text().splitlines():
                if needle in line:
                    return line
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def _one_line(msg):
    return " ".join(str(msg).split())


# -- request helpers -----------------------------------------------------------

def sampling(**kw):
    return pb.SamplingParams(**kw)


def greedy(max_tokens=None, **kw):
    if max_tokens is not None:
        kw["max_tokens"] = max_tokens
    return pb.SamplingParams(temperature=0.0, **kw)


class StreamResult:
    """A Generate / Chat stream read to its end."""

    def __init__(self):
        self.tokens = []  # Token messages
        self.final = None  # Final, if one came
        self.code = grpc.StatusCode.OK
        self.details = ""
        self.after_final = 0  # messages after the final (must stay 0)

    @property
    def ids(self):
        return [t.id for t in self.tokens]

    @property
    def text(self):
        """Token texts plus Final.trailing_text."""
        return "".join(t.text for t in self.tokens) + (self.final.trailing_text
                                                       if self.final else "")

    def __repr__(self):
        return "StreamResult(code=%s, ids=%s, final=%s, details=%r)" % (
            self.code, self.ids, _one_line(self.final) if self.final else None, self.details)


def read_stream(call, on_token=None):
    """Reads a response iterator to its end into a StreamResult (errors are
    recorded, not raised). on_token(result) runs after each token message."""
    r = StreamResult()
    try:
        for msg in call:
            which = msg.WhichOneof("event")
            if r.final is not None:
                r.after_final += 1
            if which == "token":
                r.tokens.append(msg.token)
                if on_token:
                    on_token(r)
            elif which == "final":
                r.final = msg.final
    except grpc.RpcError as e:
        r.code = e.code()
        r.details = e.details() or ""
    return r


def generate(stub, request, timeout=60):
    return read_stream(stub.Generate(request, timeout=timeout))


def rpc_error(fn, *args, **kwargs):
    """Calls fn; returns the grpc.RpcError it raised, or None."""
    try:
        result = fn(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            for _ in result:
                pass
    except grpc.RpcError as e:
        return e
    return None


def run_threads(fns, timeout=120):
    """Runs each zero-argument callable in its own thread, started together
    (behind a barrier); returns their results in order. Re-raises the first
    exception."""
    n = len(fns)
    results = [None] * n
    errors = [None] * n
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait(timeout=30)
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001
            errors[i] = e

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise AssertionError("%d of %d threads still running after %.0f s" %
                             (sum(t.is_alive() for t in threads), n, timeout))
    for e in errors:
        if e is not None:
            raise e
    return results
