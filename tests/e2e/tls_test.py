"""End-to-end tests of TLS and mTLS on the gRPC port (docs/security.md, "TLS
and mTLS"): `memserve serve --tls_cert --tls_key [--tls_client_ca]` against the
real memserve-cli (--tls_ca, --tls_cert, --tls_key) and Python's grpc, with a
test CA, a server certificate and client certificates made at test time by
Debian's openssl CLI (memserve-bench over mTLS too); bad flag combinations and unreadable or invalid files.

Run: bazel test //tests/e2e:tls_test, or by hand after
`bazel build //server:memserve //clients/cli:memserve-cli //proto:memserve_py //proto:health_py`:
  /usr/bin/python3 tests/e2e/tls_test.py --memserve bazel-bin/server/memserve \
      --cli bazel-bin/clients/cli/memserve-cli --bench bazel-bin/clients/bench/memserve-bench
"""
import json
import os
import subprocess
import sys
import unittest

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))

import harness  # noqa: E402
from harness import pb, greedy, DEMO_MODEL  # noqa: E402
import memserve  # noqa: E402  (clients/python)

CLI = harness.take_path_arg("--cli", "clients/cli/memserve-cli")
BENCH = harness.take_path_arg("--bench", "clients/bench/memserve-bench")
CERTS = None  # the directory of the files below, made in setUpModule
PROMPT = "The capital of Batourkor is"


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def make_certs(d):
    """ca.pem/ca.key and other_ca.pem/other_ca.key (self-signed CAs);
    server.pem/server.key signed by ca (SAN 127.0.0.1 and localhost);
    client.pem/client.key signed by ca; bad_client.pem/bad_client.key signed
    by other_ca. EC P-256 keys (fast to make)."""
    def path(name):
        return os.path.join(d, name)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other_ca"):
        openssl("req", "-x509", *ec, "-keyout", path(ca + ".key"), "-out", path(ca + ".pem"),
                "-days", "2", "-subj", "/CN=memserve test " + ca)
    ext = path("server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca, extra in (("server", "ca", ["-extfile", ext]), ("client", "ca", []),
                            ("bad_client", "other_ca", [])):
        openssl("req", "-new", *ec, "-keyout", path(name + ".key"), "-out", path(name + ".csr"),
                "-subj", "/CN=memserve test " + name)
        openssl("x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".pem"),
                "-CAkey", path(ca + ".key"), "-CAcreateserial", "-out", path(name + ".pem"),
                "-days", "2", *extra)


def cert(name):
    return os.path.join(CERTS, name)


def read(name):
    with open(cert(name), "rb") as f:
        return f.read()


def setUpModule():
    global CERTS
    CERTS = harness.tmpdir("tls_certs_")
    make_certs(CERTS)


def cli(srv, *args, timeout=60):
    cmd = [CLI, "--server", "127.0.0.1:%d" % srv.port, "--connect_timeout", "5s"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def generate(srv, *tls):
    return cli(srv, *tls, "generate", "--prompt", PROMPT, "--max_tokens", "8", "--nosummary")


def serve(*flags, timeout=30):
    """Runs `memserve serve` on the demo model to its exit (it must exit by itself)."""
    cmd = [harness.memserve_binary(), "serve", "--model", DEMO_MODEL,
           "--listen", "127.0.0.1:0"] + list(flags)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def tls_server(name, *flags, client_cert=False):
    """A started server with --tls_cert/--tls_key (plus `flags`); the harness's
    own channel trusts ca.pem (and presents client.pem when client_cert)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read("client.key") if client_cert else None,
        certificate_chain=read("client.pem") if client_cert else None)
    return harness.Server("--tls_cert", cert("server.pem"), "--tls_key", cert("server.key"),
                          *flags, name=name, credentials=creds).start()


class TlsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.srv = tls_server("tls")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def assertFails(self, r):
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout, "")
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)

    def test_python_client_over_tls(self):
        # The harness reached readiness over TLS; a Complete works too.
        c = self.srv.stub.Complete(pb.GenerateRequest(text=PROMPT, sampling=greedy(4)),
                                   timeout=30)
        self.assertEqual(len(c.token_ids), 4)
        self.assertIn(" tls=on ", self.srv.wait_log(" INFO ready "))

    def test_cli_generate_streams_over_tls(self):
        r = generate(self.srv, "--tls_ca", cert("ca.pem"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.strip(), r.stderr)
        # The same text as over Python's TLS channel (greedy).
        c = self.srv.stub.Complete(pb.GenerateRequest(text=PROMPT, sampling=greedy(8)),
                                   timeout=30)
        self.assertEqual(r.stdout.rstrip("\n"), c.text)

    def test_python_package_client_over_tls(self):
        with memserve.Client("127.0.0.1:%d" % self.srv.port, timeout=30,
                             root_certificates=read("ca.pem")) as c:
            self.assertTrue(c.complete(PROMPT, max_tokens=4).text)
        with memserve.Client("127.0.0.1:%d" % self.srv.port, timeout=5,
                             root_certificates=read("other_ca.pem")) as c:
            with self.assertRaises(memserve.MemserveError) as e:
                c.complete(PROMPT, max_tokens=4)
            self.assertEqual(e.exception.code, "UNAVAILABLE")

    def test_plaintext_client_fails(self):
        r = generate(self.srv)
        self.assertFails(r)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("cannot reach server", r.stderr)
        ch = grpc.insecure_channel("127.0.0.1:%d" % self.srv.port)
        with self.assertRaises(grpc.RpcError) as e:
            harness.pb_grpc.MemServeStub(ch).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_client_trusting_another_ca_fails(self):
        r = generate(self.srv, "--tls_ca", cert("other_ca.pem"))
        self.assertFails(r)
        self.assertEqual(r.returncode, 3, r.stderr)


class MtlsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.srv = tls_server("mtls", "--tls_client_ca", cert("ca.pem"), client_cert=True)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_right_client_cert_works(self):
        r = generate(self.srv, "--tls_ca", cert("ca.pem"), "--tls_cert", cert("client.pem"),
                     "--tls_key", cert("client.key"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.strip(), r.stderr)
        self.assertIn(" tls=mtls ", self.srv.wait_log(" INFO ready "))
        with memserve.Client("127.0.0.1:%d" % self.srv.port, timeout=30,
                             root_certificates=read("ca.pem"), private_key=read("client.key"),
                             certificate_chain=read("client.pem")) as c:
            self.assertTrue(c.complete(PROMPT, max_tokens=4).text)

    def test_bench_over_mtls(self):
        base = [BENCH, "--server", "127.0.0.1:%d" % self.srv.port, "--connect_timeout", "5s",
                "--dataset", "random", "--random_input_len", "8", "--random_output_len", "4",
                "--num_prompts", "4", "--num_warmups", "0", "--tls_ca", cert("ca.pem")]
        out = harness.tmpdir("tls_bench_")
        r = subprocess.run(base + ["--tls_cert", cert("client.pem"), "--tls_key",
                                   cert("client.key"), "--out_dir", out],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(out, "result.json")) as f:
            self.assertEqual(json.load(f)["summary"]["completed"], 4)
        # Without the client certificate: no request gets through.
        r = subprocess.run(base, capture_output=True, text=True, timeout=120)
        self.assertIn(r.returncode, (1, 3), r.stdout + r.stderr)

    def test_wrong_or_no_client_cert_fails(self):
        for name, flags in (("none", []),
                            ("other CA", ["--tls_cert", cert("bad_client.pem"),
                                          "--tls_key", cert("bad_client.key")])):
            with self.subTest(client_cert=name):
                r = generate(self.srv, "--tls_ca", cert("ca.pem"), *flags)
                # With TLS 1.3 the client may finish its side of the handshake
                # before the server refuses the certificate: unreachable (3) or
                # a failed call, never output.
                self.assertIn(r.returncode, (1, 3), r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertIn("UNAVAILABLE", r.stderr)
        # Python's client without a certificate fails the same way.
        ch = grpc.secure_channel("127.0.0.1:%d" % self.srv.port,
                                 grpc.ssl_channel_credentials(root_certificates=read("ca.pem")))
        with self.assertRaises(grpc.RpcError) as e:
            harness.pb_grpc.MemServeStub(ch).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)


class FlagTest(unittest.TestCase):

    def assertOneLine(self, r, code, *needles):
        self.assertEqual(r.returncode, code, "stdout=%r stderr=%r" % (r.stdout, r.stderr))
        self.assertEqual(len(r.stderr.splitlines()), 1, "stderr is not one line: %r" % r.stderr)
        for n in needles:
            self.assertIn(n, r.stderr)
        self.assertNotIn(" INFO ready ", r.stderr)

    def test_cert_and_key_go_together(self):
        self.assertOneLine(serve("--tls_cert", cert("server.pem")), 2, "--tls_cert", "--tls_key")
        self.assertOneLine(serve("--tls_key", cert("server.key")), 2, "--tls_cert", "--tls_key")

    def test_client_ca_requires_cert_and_key(self):
        self.assertOneLine(serve("--tls_client_ca", cert("ca.pem")), 2, "--tls_client_ca",
                           "requires --tls_cert and --tls_key")

    def test_missing_file_names_it(self):
        missing = os.path.join(CERTS, "no_such.pem")
        for flags, flag in (
                (["--tls_cert", missing, "--tls_key", cert("server.key")], "--tls_cert"),
                (["--tls_cert", cert("server.pem"), "--tls_key", missing], "--tls_key"),
                (["--tls_cert", cert("server.pem"), "--tls_key", cert("server.key"),
                  "--tls_client_ca", missing], "--tls_client_ca")):
            with self.subTest(flag=flag):
                self.assertOneLine(serve(*flags), 1, flag, missing, "cannot read")

    def test_invalid_pem_is_a_bad_argument(self):
        not_pem = os.path.join(CERTS, "not_pem.txt")
        with open(not_pem, "w") as f:
            f.write("hello\n")
        self.assertOneLine(serve("--tls_cert", not_pem, "--tls_key", cert("server.key")), 2,
                           "--tls_cert", not_pem, "not a PEM file")
        # The certificate where the key belongs.
        self.assertOneLine(serve("--tls_cert", cert("server.pem"), "--tls_key",
                                 cert("server.pem")), 2, "--tls_key", "PRIVATE KEY")
        # PEM blocks that gRPC cannot use: a key that does not match, garbage inside.
        garbage = os.path.join(CERTS, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        for c, k in ((cert("server.pem"), cert("client.key")), (garbage, cert("server.key"))):
            with self.subTest(cert=c, key=k):
                self.assertOneLine(serve("--tls_cert", c, "--tls_key", k, timeout=60), 2,
                                   "TLS", "--tls_cert", "--tls_key")

    def test_cli_flag_errors(self):
        srv_port = "127.0.0.1:1"
        for flags, needles in (
                (["--tls_cert", cert("client.pem"), "--tls_key", cert("client.key")],
                 ["--tls_ca"]),
                (["--tls_ca", cert("ca.pem"), "--tls_cert", cert("client.pem")],
                 ["--tls_cert", "--tls_key"]),
                (["--tls_ca", os.path.join(CERTS, "no_such.pem")], ["--tls_ca", "no_such.pem"])):
            with self.subTest(flags=flags):
                r = subprocess.run([CLI, "--server", srv_port] + flags + ["info"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                for n in needles:
                    self.assertIn(n, r.stderr)


if __name__ == "__main__":
    harness.main()
