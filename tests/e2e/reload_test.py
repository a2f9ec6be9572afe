"""End-to-end tests of SIGHUP (docs/security.md, "Rotating keys and
certificates"): `memserve serve` re-reads --api_keys_file and its TLS files
without dropping connections. Against a real server on loopback with
certificates made at test time by Debian's openssl: a Generate stream open
across the SIGHUP runs to its end; new handshakes get the new certificate
(signed by another CA) while the connection made before keeps working; a key
removed from the file is refused after the reload; bad files on reload keep
what was served (one ERROR line each).

Run: bazel test //tests/e2e:reload_test, or by hand (see harness.py).
"""
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import harness  # noqa: E402
from harness import pb, greedy  # noqa: E402

CERTS = None
PROMPT = "The capital of Batourkor is"


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def make_certs(d):
    """ca1/ca2 (self-signed), server1 signed by ca1, server2 signed by ca2 (SAN
    127.0.0.1, localhost); EC P-256 keys."""
    def path(name):
        return os.path.join(d, name)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ext = path("server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for n in ("1", "2"):
        ca, server = "ca" + n, "server" + n
        openssl("req", "-x509", *ec, "-keyout", path(ca + ".key"), "-out", path(ca + ".pem"),
                "-days", "2", "-subj", "/CN=memserve reload test " + ca)
        openssl("req", "-new", *ec, "-keyout", path(server + ".key"), "-out",
                path(server + ".csr"), "-subj", "/CN=localhost")
        openssl("x509", "-req", "-in", path(server + ".csr"), "-CA", path(ca + ".pem"),
                "-CAkey", path(ca + ".key"), "-CAcreateserial", "-out", path(server + ".pem"),
                "-days", "2", "-extfile", ext)


def setUpModule():
    global CERTS
    CERTS = harness.tmpdir("reload_certs_")
    make_certs(CERTS)


def read(name):
    with open(os.path.join(CERTS, name), "rb") as f:
        return f.read()


def bearer(key):
    return (("authorization", "Bearer " + key),)


def channel_trusting(port, ca):
    return grpc.secure_channel("127.0.0.1:%d" % port,
                               grpc.ssl_channel_credentials(root_certificates=read(ca)),
                               options=harness.CHANNEL_OPTIONS)


def complete(channel, key, timeout=10):
    stub = harness.pb_grpc.MemServeStub(channel)
    return stub.Complete(pb.GenerateRequest(text=PROMPT, sampling=greedy(3)),
                         metadata=bearer(key), timeout=timeout)


class ReloadTest(unittest.TestCase):

    def setUp(self):
        self.dir = harness.tmpdir("reload_")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        self.keys = os.path.join(self.dir, "keys.txt")
        shutil.copy(os.path.join(CERTS, "server1.pem"), self.cert)
        shutil.copy(os.path.join(CERTS, "server1.key"), self.key)
        with open(self.keys, "w") as f:
            f.write("key-a\nkey-b\n")
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca1.pem"))
        self.srv = harness.Server("--tls_cert", self.cert, "--tls_key", self.key,
                                  "--api_keys_file", self.keys, "--debug_step_delay", "50ms",
                                  name="reload", credentials=creds).start()

    def tearDown(self):
        self.srv.kill()

    def reload(self, count):
        """SIGHUP; waits for the `count`-th reloaded line and returns it."""
        self.srv.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = [x for x in self.srv.stderr_text().splitlines() if " reloaded " in x]
            if len(lines) >= count:
                return lines[count - 1]
            time.sleep(0.05)
        self.fail("no reloaded line after SIGHUP:\n" + self.srv.stderr_tail())

    def test_sighup_rotates_cert_and_keys_with_a_stream_open(self):
        old = self.srv.channel
        stream = self.srv.stub.Generate(
            pb.GenerateRequest(text=PROMPT, sampling=greedy(40, ignore_eos=True)),
            metadata=bearer("key-a"), timeout=120)
        first = next(stream)
        self.assertEqual(first.WhichOneof("event"), "token")

        # Rotate: the server2 certificate (another CA), key-a removed.
        shutil.copy(os.path.join(CERTS, "server2.pem"), self.cert)
        shutil.copy(os.path.join(CERTS, "server2.key"), self.key)
        with open(self.keys, "w") as f:
            f.write("key-b\n")
        line = self.reload(1)
        self.assertIn(" api_keys=1 ", line)
        self.assertIn(" ok=true", line)
        self.assertTrue(self.srv.running())

        # The stream open across the SIGHUP runs to its end.
        rest = harness.read_stream(stream)
        self.assertEqual(rest.code, grpc.StatusCode.OK, rest)
        self.assertEqual(len(rest.tokens) + 1, 40)
        self.assertEqual(rest.final.finish_reason, pb.FINISH_REASON_LENGTH)

        # New handshakes: the new certificate, within about a second.
        deadline = time.monotonic() + 10
        while True:
            with channel_trusting(self.srv.port, "ca2.pem") as ch:
                try:
                    self.assertEqual(len(complete(ch, "key-b", timeout=5).token_ids), 3)
                    break
                except grpc.RpcError as e:
                    if time.monotonic() > deadline:
                        self.fail("no handshake with the new certificate: %s" % e)
            time.sleep(0.2)
        with channel_trusting(self.srv.port, "ca1.pem") as ch:
            with self.assertRaises(grpc.RpcError) as e:
                complete(ch, "key-b", timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)

        # The connection made before the reload is still up (no new handshake:
        # it would fail, trusting ca1 only); the removed key is refused.
        self.assertEqual(len(complete(old, "key-b").token_ids), 3)
        with self.assertRaises(grpc.RpcError) as e:
            complete(old, "key-a")
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertNotIn("key-a", self.srv.stderr_text())
        self.assertEqual(self.srv.stop(), 0, self.srv.stderr_tail())

    def test_bad_files_on_reload_keep_what_was_served(self):
        with open(self.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        with open(self.keys, "w") as f:
            f.write("# no keys left\n")
        line = self.reload(1)
        self.assertIn(" ok=false", line)
        self.assertIn(" api_keys=unchanged ", line)
        self.assertIn(" tls_cert=unchanged ", line)
        errors = [x for x in self.srv.stderr_text().splitlines() if " ERROR reload (SIGHUP): " in x]
        self.assertEqual(len(errors), 2, self.srv.stderr_tail())
        self.assertIn("--api_keys_file %s: no keys" % self.keys, errors[0])
        self.assertIn("keeping the previous API keys", errors[0])
        self.assertIn("--tls_cert %s" % self.cert, errors[1])
        self.assertIn("keeping the previous certificate", errors[1])
        # Both keys and the old certificate still work, on new connections too.
        time.sleep(1.5)  # past the staged files' refresh interval
        with channel_trusting(self.srv.port, "ca1.pem") as ch:
            self.assertEqual(len(complete(ch, "key-a").token_ids), 3)
            self.assertEqual(len(complete(ch, "key-b").token_ids), 3)
        # A good file later is taken.
        shutil.copy(os.path.join(CERTS, "server1.pem"), self.cert)
        with open(self.keys, "w") as f:
            f.write("key-c\n")
        self.assertIn(" ok=true", self.reload(2))
        with channel_trusting(self.srv.port, "ca1.pem") as ch:
            self.assertEqual(len(complete(ch, "key-c").token_ids), 3)
            with self.assertRaises(grpc.RpcError) as e:
                complete(ch, "key-a")
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)


class PlaintextReloadTest(unittest.TestCase):

    def test_sighup_without_keys_or_tls_keeps_serving(self):
        with harness.Server(name="plain_reload") as srv:
            srv.signal(signal.SIGHUP)
            self.assertIsNotNone(srv.wait_log(" reloaded ", timeout=10), srv.stderr_tail())
            c = srv.stub.Complete(pb.GenerateRequest(text=PROMPT, sampling=greedy(2)), timeout=30)
            self.assertEqual(len(c.token_ids), 2)
            self.assertEqual(srv.stop(), 0, srv.stderr_tail())


if __name__ == "__main__":
    harness.main()
