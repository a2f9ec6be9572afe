"""End-to-end test of memserve's observability (docs/metrics.md): a real
Prometheus server (Debian's /usr/bin/prometheus, scraping every second on
loopback) scrapes a real `memserve serve --metrics_listen` on the demo model
while memserve-loadgen and a Python client put it under a short load; the test
then asks Prometheus's HTTP API for the series: a TTFT quantile, the running
gauge up then back to 0, token and request counters equal to what the clients
got, request_success_total by finished_reason. Also /healthz and /readyz
(loading, ready, draining) and the JSON log format.

Run: bazel test //tests/e2e:metrics_test, or by hand (see harness.py) with
  --loadgen bazel-bin/clients/loadgen/memserve-loadgen
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import pb, greedy  # noqa: E402

LOADGEN = harness.take_path_arg("--loadgen", "clients/loadgen/memserve-loadgen")
PROMETHEUS = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")
MODEL = '{model_name="demo"}'
LOADGEN_PROMPT = "The memory layer of this model"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metrics_port(srv, timeout=10):
    line = srv.wait_log("metrics endpoint", timeout=timeout)
    if line is None:
        raise AssertionError("no 'metrics endpoint' log line:\n" + srv.stderr_tail())
    return int(re.search(r"\bport=(\d+)", line).group(1))


class Prometheus:
    """/usr/bin/prometheus on loopback scraping `target` every second."""

    def __init__(self, target):
        self.dir = harness.tmpdir("prometheus_")
        self.port = free_port()
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: memserve\n"
                    "    static_configs:\n"
                    "      - targets: ['%s']\n" % target)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d" % self.port
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited with %d:\n%s" %
                                     (self.proc.returncode, self.log_text()))
            try:
                if http_get(self.url + "/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus not ready in 30 s:\n" + self.log_text())

    def log_text(self):
        with open(os.path.join(self.dir, "prometheus.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def query(self, promql):
        """The instant vector of `promql`: [(labels, value)]."""
        status, body = http_get(self.url + "/api/v1/query?" +
                                urllib.parse.urlencode({"query": promql}))
        if status != 200:
            raise AssertionError("query %s: HTTP %d %s" % (promql, status, body))
        data = json.loads(body)["data"]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def value(self, promql):
        """The single value of `promql`, or None when the result is empty."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) != 1:
            raise AssertionError("%s: %d series: %s" % (promql, len(result), result))
        return result[0][1]

    def wait_value(self, promql, expected, timeout=10):
        """Polls until `promql` equals `expected` (new scrapes arrive each
        second); returns the last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(promql)
            if value == expected:
                return value
            time.sleep(0.25)
        return value

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrometheusScrapeTest(unittest.TestCase):

    def test_prometheus_sees_the_load(self):
        if not os.access(PROMETHEUS, os.X_OK):
            self.fail("%s not found: tools/setup.sh installs Debian's prometheus" % PROMETHEUS)
        # Each step sleeps, so requests stay running across several scrapes.
        with harness.Server("--metrics_listen", "127.0.0.1:0", "--debug_step_delay", "25ms",
                            name="metrics") as srv:
            port = metrics_port(srv)
            prom = Prometheus("127.0.0.1:%d" % port)
            try:
                self.check_under_load(srv, prom)
            finally:
                prom.stop()

    def check_under_load(self, srv, prom):
        # Prometheus scrapes before any request: the series exist at 0.
        self.assertEqual(prom.wait_value("memserve:num_requests_running" + MODEL, 0), 0,
                         prom.log_text())
        self.assertEqual(prom.value('up{job="memserve"}'), 1)

        # memserve-loadgen: 8 requests of 80 tokens (ignore_eos), 4 streams.
        report_path = os.path.join(srv.dir, "loadgen.json")
        r = subprocess.run([LOADGEN, "--server", "127.0.0.1:%d" % srv.port, "--streams", "4",
                            "--requests", "8", "--max_tokens", "80", "--warmup", "0",
                            "--prompt", LOADGEN_PROMPT, "--json_out", report_path],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(report_path) as f:
            report = json.load(f)
        self.assertEqual(report["ok"], 8, report)
        loadgen_prompt = len(srv.stub.Tokenize(pb.TokenizeRequest(text=LOADGEN_PROMPT),
                                               timeout=10).token_ids)
        # A few questions the demo model answers and ends with EOS ("stop").
        facts = harness.load_facts()[:3]
        answers = [srv.stub.Complete(pb.GenerateRequest(text=f["prompt"], sampling=greedy(60)),
                                     timeout=60) for f in facts]
        by_reason = {"length": 8, "stop": 0}
        for a in answers:
            by_reason["length" if a.finish_reason == pb.FINISH_REASON_LENGTH else "stop"] += 1
        self.assertGreater(by_reason["stop"], 0, [a.finish_reason for a in answers])
        prompt_tokens = 8 * loadgen_prompt + sum(a.usage.prompt_tokens for a in answers)
        generation_tokens = report["completion_tokens"] + sum(a.usage.completion_tokens
                                                              for a in answers)
        requests = 8 + len(answers)

        # Counters equal what the clients got (once a scrape after the load arrived).
        self.assertEqual(prom.wait_value("sum(memserve:request_success_total%s)" % MODEL,
                                         requests), requests)
        for reason, n in by_reason.items():
            self.assertEqual(prom.value('memserve:request_success_total{model_name="demo",'
                                        'finished_reason="%s"}' % reason), n, reason)
        self.assertEqual(prom.value("memserve:generation_tokens_total" + MODEL),
                         generation_tokens)
        self.assertEqual(prom.value("memserve:prompt_tokens_total" + MODEL), prompt_tokens)
        self.assertEqual(prom.value('sum(memserve:requests_total{model_name="demo",code="OK"})'),
                         requests)
        self.assertEqual(prom.value('memserve:requests_total{model_name="demo",'
                                    'method="Complete",code="OK"}'), len(answers))
        self.assertEqual(prom.value("memserve:time_to_first_token_seconds_count" + MODEL),
                         requests)
        self.assertEqual(prom.value("memserve:e2e_request_latency_seconds_count" + MODEL),
                         requests)
        self.assertEqual(prom.value("memserve:inter_token_latency_seconds_count" + MODEL),
                         generation_tokens - requests)

        # Histograms: a TTFT quantile, and an inter-token latency that reflects
        # the 25 ms step delay.
        ttft_p50 = prom.value("histogram_quantile(0.5, sum by (le) "
                              "(memserve:time_to_first_token_seconds_bucket%s))" % MODEL)
        self.assertIsNotNone(ttft_p50)
        self.assertGreater(ttft_p50, 0)
        self.assertLess(ttft_p50, 10)
        itl_p50 = prom.value("histogram_quantile(0.5, sum by (le) "
                             "(memserve:inter_token_latency_seconds_bucket%s))" % MODEL)
        self.assertGreaterEqual(itl_p50, 0.025)
        self.assertLess(itl_p50, 1.0)

        # The running gauge went up during the load and is back to 0.
        peak = prom.value("max_over_time(memserve:num_requests_running%s[5m])" % MODEL)
        self.assertGreaterEqual(peak, 1)
        self.assertLessEqual(peak, 4)  # 4 streams
        self.assertEqual(prom.wait_value("memserve:num_requests_running" + MODEL, 0), 0)
        self.assertEqual(prom.value("memserve:num_requests_waiting" + MODEL), 0)
        self.assertEqual(prom.value("memserve:kv_cache_usage_perc" + MODEL), 0)
        self.assertGreater(prom.value("max_over_time(memserve:kv_cache_usage_perc%s[5m])"
                                      % MODEL), 0)

        # The memory layer: rows read (heads x knn per computed token), the
        # pool's bytes on the CPU, the distinct-row fraction.
        mem = harness.load_config()["memory"]
        rows = prom.value("memserve:memory_rows_read_total" + MODEL)
        self.assertGreater(rows, 0)
        self.assertEqual(rows % (mem["heads"] * mem["knn"]), 0)
        self.assertEqual(prom.value('memserve:memory_pool_bytes{model_name="demo",device="cpu",'
                                    'placement="cpu-mmap"}'),
                         mem["n_keys"] ** 2 * mem["v_dim"] * 2)
        fraction = prom.value("sum(memserve:memory_distinct_rows_total%s) / "
                              "sum(memserve:memory_rows_sampled_total%s)" % (MODEL, MODEL))
        self.assertGreater(fraction, 0)
        self.assertLessEqual(fraction, 1)
        self.assertGreater(prom.value("memserve:memory_lookup_seconds_count" + MODEL), 0)


class HttpRequestsCountedTest(unittest.TestCase):
    """Calls of the OpenAI-compatible HTTP API go through the same request
    accounting (server/api/ApiCore) as gRPC: one log line and one
    memserve:requests_total sample each, under their HTTP path."""

    def test_http_calls_are_counted_by_path_and_code(self):
        with harness.Server("--metrics_listen", "127.0.0.1:0", name="metrics_http",
                            http=True) as srv:
            base = "http://127.0.0.1:%d" % srv.http_port

            def post(body):
                req = urllib.request.Request(base + "/v1/completions",
                                             data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        return r.status
                except urllib.error.HTTPError as e:
                    return e.code

            self.assertEqual(post({"prompt": "The capital of Batourkor is", "max_tokens": 4}), 200)
            self.assertEqual(post({"prompt": "x", "max_tokens": 4, "temperature": -1}), 400)
            status, text = http_get("http://127.0.0.1:%d/metrics" % metrics_port(srv))
            self.assertEqual(status, 200)
            samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                           if line.startswith("memserve:requests_total{"))
            self.assertEqual(samples.get('memserve:requests_total{model_name="demo",'
                                         'method="/v1/completions",code="OK"}'), "1", samples)
            self.assertEqual(samples.get('memserve:requests_total{model_name="demo",'
                                         'method="/v1/completions",code="INVALID_ARGUMENT"}'),
                             "1", samples)
            self.assertIsNotNone(srv.wait_log("method=/v1/completions", timeout=5),
                                 srv.stderr_tail())


class EndpointTest(unittest.TestCase):

    def test_healthz_and_readyz_through_the_lifecycle(self):
        with harness.Server("--metrics_listen", "127.0.0.1:0", "--debug_load_delay", "2s",
                            "--debug_step_delay", "20ms", "--shutdown_timeout", "20",
                            name="endpoints").start(wait_ready=False) as srv:
            base = "http://127.0.0.1:%d" % metrics_port(srv)
            # Loading: alive, not ready.
            self.assertEqual(http_get(base + "/healthz"), (200, "ok\n"))
            self.assertEqual(http_get(base + "/readyz"), (503, "loading\n"))
            srv.wait_ready()
            self.assertEqual(http_get(base + "/readyz"), (200, "ready\n"))
            status, body = http_get(base + "/metrics")
            self.assertEqual(status, 200)
            self.assertIn("# TYPE memserve:time_to_first_token_seconds histogram", body)
            self.assertEqual(http_get(base + "/nothing")[0], 404)

            # Draining: a request in flight keeps the process up; readyz says so.
            req = pb.GenerateRequest(text="The capital of",
                                     sampling=greedy(90, ignore_eos=True))
            result = {}
            t = threading.Thread(target=lambda: result.update(
                r=harness.generate(srv.stub, req, timeout=60)), daemon=True)
            t.start()
            srv.wait_status(lambda st: st.running == 1, what="running == 1")
            srv.signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            seen = None
            while time.monotonic() < deadline:
                seen = http_get(base + "/readyz")
                if seen[0] == 503:
                    break
                time.sleep(0.02)
            self.assertEqual(seen, (503, "draining\n"))
            self.assertEqual(http_get(base + "/healthz"), (200, "ok\n"))
            t.join(60)
            self.assertEqual(result["r"].code, harness.grpc.StatusCode.OK, result["r"])
            self.assertEqual(srv.wait_exit(30), 0, srv.stderr_tail())

    def test_bad_metrics_listen_is_a_one_line_error(self):
        r = subprocess.run([harness.memserve_binary(), "serve", "--model", harness.DEMO_MODEL,
                            "--listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn("--metrics_listen", r.stderr)
        self.assertIn("HOST:PORT", r.stderr)

    def test_metrics_port_in_use_is_refused(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            addr = "127.0.0.1:%d" % busy.getsockname()[1]
            r = subprocess.run([harness.memserve_binary(), "serve", "--model",
                                harness.DEMO_MODEL, "--listen", "127.0.0.1:0",
                                "--metrics_listen", addr],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot listen on %s (--metrics_listen)" % addr, r.stderr)
        self.assertNotIn('"ready"', r.stderr)
        self.assertNotIn(" INFO ready ", r.stderr)


if __name__ == "__main__":
    harness.main()
