"""memserve-bench against a real `memserve serve` on the demo model
(models/demo, a 128-token context), started by tests/e2e/harness.py.

Run: bazel test //clients/bench:bench_server_test, or by hand after
`bazel build //server:memserve //clients/bench:memserve-bench //proto:memserve_py
//proto:health_py`:
  /usr/bin/python3 clients/bench/bench_server_test.py --memserve bazel-bin/server/memserve \
      --bench bazel-bin/clients/bench/memserve-bench
"""
import csv
import json
import math
import os
import re
import subprocess
import sys
import time
import unittest

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402

BENCH = None
SRV = None
PERCENTILES = [50, 90, 99]


def setUpModule():
    global SRV
    SRV = harness.Server(name="bench").start()


def tearDownModule():
    SRV.stop()


def run(*args, server=None, timeout=300):
    srv = server or SRV
    cmd = [BENCH, "--server", "127.0.0.1:%d" % srv.port] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def run_json(*args, server=None, expect_rc=0):
    out = harness.tmpdir("bench_")
    r = run(*args, "--out_dir", out, server=server)
    if r.returncode != expect_rc:
        raise AssertionError("exit %d, wanted %d:\n%s%s" % (r.returncode, expect_rc, r.stdout,
                                                           r.stderr))
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f), r


def cv(x):
    x = np.asarray(x, dtype=float)
    return x.std() / x.mean()


# Cheap requests, so that the server keeps up with 40/s and sends go out on time.
CHEAP = ["--dataset", "random", "--random_input_len", "8", "--random_output_len", "2",
         "--num_prompts", "150", "--request_rate", "40", "--seed", "7"]


class ArrivalTest(unittest.TestCase):
    """The recorded send times follow the seeded gamma schedule."""

    @classmethod
    def setUpClass(cls):
        cls.runs = {b: run_json(*CHEAP, "--burstiness", str(b))[0] for b in (0.25, 1, 4)}

    def test_sends_follow_the_schedule(self):
        for b, result in self.runs.items():
            req = result["requests"]
            self.assertEqual(req["status"], ["OK"] * 150)
            late = np.asarray(req["sent_s"]) - np.asarray(req["scheduled_s"])
            self.assertGreaterEqual(late.min(), 0, b)  # never early
            self.assertLess(np.median(late), 0.005, b)  # on time, give or take a busy machine

    def test_poisson_rate_and_dispersion_on_recorded_send_times(self):
        sent = np.asarray(self.runs[1]["requests"]["sent_s"])
        self.assertTrue(np.all(np.diff(sent) >= 0))
        rate = (len(sent) - 1) / (sent[-1] - sent[0])
        self.assertLess(abs(rate - 40) / 40, 0.2, rate)  # 149 intervals: 1 sigma is 8%
        gaps = np.diff(sent)
        self.assertLess(abs(cv(gaps) - 1), 0.25, cv(gaps))  # exponential: CV 1
        # Exponential: half the gaps are shorter than ln(2) / rate.
        self.assertLess(abs(np.mean(gaps < math.log(2) / 40) - 0.5), 0.1)
        self.assertEqual(self.runs[1]["config"]["request_rate"], "40")
        self.assertEqual(self.runs[1]["config"]["burstiness"], 1)

    def test_burstiness_changes_dispersion_not_rate(self):
        cvs = {b: cv(np.diff(r["requests"]["sent_s"])) for b, r in self.runs.items()}
        # Gamma intervals: CV = 1 / sqrt(burstiness): 2, 1, 0.5.
        self.assertGreater(cvs[0.25], 1.4, cvs)
        self.assertLess(cvs[4], 0.7, cvs)
        self.assertLess(cvs[4], cvs[1], cvs)
        self.assertLess(cvs[1], cvs[0.25], cvs)
        for b, r in self.runs.items():
            sent = r["requests"]["sent_s"]
            rate = (len(sent) - 1) / (sent[-1] - sent[0])
            self.assertLess(abs(rate - 40) / 40, 0.35, (b, rate))

    def test_same_seed_same_schedule(self):
        again, _ = run_json(*CHEAP, "--burstiness", "1", "--num_prompts", "20")
        self.assertEqual(again["requests"]["scheduled_s"],
                         self.runs[1]["requests"]["scheduled_s"][:20])


class DatasetTest(unittest.TestCase):

    def test_sharegpt_first_user_turn_and_reply_length(self):
        path = os.path.join(harness.tmpdir("bench_"), "sharegpt.json")
        conversations = [
            {"id": "a", "conversations": [{"from": "human", "value": "The capital of Batourkor is"},
                                          {"from": "gpt", "value": " Draenddron."}]},
            {"id": "b", "conversations": [{"from": "system", "value": "be brief"},
                                          {"from": "human", "value": "The ruler of Batourkor is"},
                                          {"from": "gpt", "value": "x" * 20}]},
            {"id": "c", "conversations": [{"from": "human", "value": "no reply"}]},
        ]
        with open(path, "w") as f:
            json.dump(conversations, f)
        result, r = run_json("--dataset", "sharegpt", "--dataset_path", path, "--num_prompts", "6",
                             "--ignore_eos=true")
        req = result["requests"]
        self.assertEqual(req["status"], ["OK"] * 6)
        # Bytes tokenizer: prompt bytes + BOS in, the reply's bytes out (ignore_eos).
        pairs = sorted(set(zip(req["input_lens"], req["output_lens"])))
        self.assertEqual(pairs, [(len("The ruler of Batourkor is") + 1, 20),
                                 (len("The capital of Batourkor is") + 1, len(" Draenddron."))])
        self.assertIn("dataset sharegpt", r.stdout)

    def test_jsonl_output_tokens_and_the_output_len_override(self):
        path = os.path.join(harness.tmpdir("bench_"), "prompts.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps({"prompt": "Hello", "output_tokens": 7}) + "\n")
        result, _ = run_json("--dataset", "jsonl", "--dataset_path", path, "--num_prompts", "3",
                             "--ignore_eos=true")
        self.assertEqual(result["requests"]["output_lens"], [7, 7, 7])
        self.assertEqual(result["requests"]["finish_reasons"], ["length"] * 3)
        result, _ = run_json("--dataset", "jsonl", "--dataset_path", path, "--num_prompts", "2",
                             "--ignore_eos=true", "--output_len", "4")
        self.assertEqual(result["requests"]["output_lens"], [4, 4])


class DurationTest(unittest.TestCase):

    def test_duration_bounds_the_sends(self):
        result, _ = run_json("--dataset", "random", "--random_input_len", "8",
                             "--random_output_len", "2", "--num_prompts", "100000",
                             "--request_rate", "20", "--duration", "1s")
        sent = result["requests"]["sent_s"]
        # The schedule's arrivals before 1 s: about 20 (Poisson), none after.
        self.assertGreater(len(sent), 5)
        self.assertLess(len(sent), 50)
        self.assertLess(max(result["requests"]["scheduled_s"]), 1.0)
        self.assertEqual(result["summary"]["completed"], len(sent))
        self.assertEqual(result["config"]["duration_limit_s"], 1)


class SummaryTest(unittest.TestCase):
    """The summary against numpy on the run's own per-request arrays."""

    @classmethod
    def setUpClass(cls):
        cls.result, cls.proc = run_json(
            "--dataset", "demo", "--dataset_path", os.path.join(harness.DEMO_MODEL, "facts.jsonl"),
            "--num_prompts", "60", "--max_concurrency", "4",
            "--goodput", "ttft:20 tpot:2 e2el:60", "--percentiles", "50,90,99")

    def test_percentiles_mean_std_match_numpy(self):
        req, summary = self.result["requests"], self.result["summary"]
        ok = [i for i, s in enumerate(req["status"]) if s == "OK"]
        self.assertEqual(len(ok), 60)
        values = {
            "ttft_ms": [req["ttfts_ms"][i] for i in ok],
            "tpot_ms": [req["tpots_ms"][i] for i in ok if req["tpots_ms"][i] is not None],
            "itl_ms": [g for i in ok for g in req["itls_ms"][i]],
            "e2el_ms": [req["e2els_ms"][i] for i in ok],
        }
        for name, v in values.items():
            d = summary[name]
            self.assertEqual(d["count"], len(v), name)
            self.assertAlmostEqual(d["mean"], float(np.mean(v)), delta=1e-9 * max(v), msg=name)
            self.assertAlmostEqual(d["std"], float(np.std(v)), delta=1e-9 * max(v), msg=name)
            self.assertAlmostEqual(d["median"], float(np.median(v)), delta=1e-9 * max(v),
                                   msg=name)
            for p in PERCENTILES:
                self.assertAlmostEqual(d["p%d" % p], float(np.percentile(v, p)),
                                       delta=1e-9 * max(v), msg="%s p%d" % (name, p))

    def test_per_request_values_are_consistent(self):
        req = self.result["requests"]
        for i in range(60):
            n = req["output_lens"][i]
            self.assertGreaterEqual(n, 1)
            self.assertEqual(len(req["itls_ms"][i]), n - 1)  # one gap per token after the first
            span = req["e2els_ms"][i] - req["ttfts_ms"][i]
            self.assertLessEqual(sum(req["itls_ms"][i]), span + 1e-6)
            if n > 1:
                self.assertAlmostEqual(req["tpots_ms"][i], span / (n - 1), places=9)
            self.assertIn(req["finish_reasons"][i], ("eos", "length"))
        # Demo facts: "The capital of X is" etc. (bytes tokenizer: bytes + BOS).
        facts = {f["prompt"] for f in harness.load_facts()}
        lens = {len(p.encode()) + 1 for p in facts}
        self.assertTrue(set(req["input_lens"]) <= lens)
        # At most the answer plus EOS (max_tokens).
        self.assertLessEqual(max(req["output_lens"]),
                             max(len(f["answer"].encode()) + 1 for f in harness.load_facts()))

    def test_throughputs_and_goodput_from_the_arrays(self):
        req, s = self.result["requests"], self.result["summary"]
        duration = s["duration_s"]
        self.assertAlmostEqual(s["request_throughput"], 60 / duration)
        self.assertEqual(s["total_output_tokens"], sum(req["output_lens"]))
        self.assertAlmostEqual(s["output_throughput"], sum(req["output_lens"]) / duration)
        self.assertAlmostEqual(s["total_token_throughput"],
                               (sum(req["output_lens"]) + sum(req["input_lens"])) / duration)
        good = sum(1 for i in range(60)
                   if req["ttfts_ms"][i] <= 20 and (req["tpots_ms"][i] or 0) <= 2
                   and req["e2els_ms"][i] <= 60)
        self.assertEqual(s["good_requests"], good)
        self.assertAlmostEqual(s["request_goodput"], good / duration)
        self.assertLessEqual(s["max_concurrent_requests"], 4)
        self.assertEqual(self.result["config"]["goodput_slo_ms"],
                         {"ttft": 20, "tpot": 2, "e2el": 60})
        # The duration spans the first send to the last completion.
        ends = [req["sent_s"][i] + req["e2els_ms"][i] / 1000 for i in range(60)]
        self.assertAlmostEqual(duration, max(ends) - min(req["sent_s"]), delta=0.002)

    def test_console_table(self):
        out = self.proc.stdout
        self.assertIn("Serving Benchmark Result", out)
        self.assertRegex(out, r"Successful requests:\s+60\n")
        self.assertRegex(out, r"Request goodput \(req/s\):\s+[0-9.]+\n")
        for metric in ("TTFT", "TPOT", "ITL", "E2EL"):
            for stat in ("Mean", "Median", "Std", "P50", "P90", "P99"):
                self.assertRegex(out, r"%s %s \(ms\):\s+[0-9.]+\n" % (stat, metric))
        self.assertIn("dataset demo", out)


class ErrorTest(unittest.TestCase):

    def test_failed_requests_are_reported_with_the_servers_message(self):
        result, r = run_json("--temperature", "-1", "--num_warmups", "0", "--num_prompts", "5",
                             expect_rc=1)
        s = result["summary"]
        self.assertEqual(s["completed"], 0)
        self.assertEqual(s["failed"], 5)
        self.assertEqual(s["request_throughput"], 0)
        self.assertEqual(s["errors"]["INVALID_ARGUMENT"]["count"], 5)
        self.assertIn("sampling.temperature", s["errors"]["INVALID_ARGUMENT"]["example"])
        self.assertEqual(result["requests"]["status"], ["INVALID_ARGUMENT"] * 5)
        self.assertTrue(all("sampling.temperature" in m for m in result["requests"]["messages"]))
        self.assertRegex(r.stdout, r'5 x INVALID_ARGUMENT, e\.g\. "sampling\.temperature[^"]*"')
        self.assertIn("memserve-bench: no request succeeded", r.stderr)

    def test_failed_warmup_stops_before_measuring(self):
        r = run("--temperature", "-1", "--num_prompts", "5")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)  # INVALID_ARGUMENT
        self.assertIn("memserve-bench: warm-up failed: INVALID_ARGUMENT: sampling.temperature",
                      r.stderr)
        self.assertNotIn("Serving Benchmark Result", r.stdout)

    def test_full_queue_is_counted_apart_with_its_message(self):
        with harness.Server("--max_batch_size", "1", "--max_queue", "1", "--debug_step_delay",
                            "2ms", name="bench_queue") as small:
            result, r = run_json("--num_prompts", "12", "--random_output_len", "8",
                                 server=small)
        s = result["summary"]
        self.assertGreaterEqual(s["completed"], 1)
        self.assertGreaterEqual(s["errors"]["RESOURCE_EXHAUSTED"]["count"], 1)
        self.assertEqual(s["completed"] + s["errors"]["RESOURCE_EXHAUSTED"]["count"], 12)
        self.assertIn("waiting queue is full (--max_queue=1)",
                      s["errors"]["RESOURCE_EXHAUSTED"]["example"])
        self.assertIn("RESOURCE_EXHAUSTED, e.g. \"", r.stdout)
        ok = [i for i, c in enumerate(result["requests"]["status"]) if c == "OK"]
        self.assertEqual(s["total_output_tokens"], 8 * len(ok))


class BadFlagsTest(unittest.TestCase):

    CASES = [
        (["--request_rate", "0"], "--request_rate must be > 0 (or inf), got 0"),
        (["--burstiness", "0"], "--burstiness must be in [0.01, 1000], got 0"),
        (["--max_concurrency", "0"], "--max_concurrency must be in [1, 100000], got 0"),
        (["--num_prompts", "0"], "--num_prompts must be in [1, 10000000], got 0"),
        (["--percentiles", "50,101"], "--percentiles: '101' is not a number in (0, 100]"),
        (["--goodput", "itl:5"],
         "--goodput: unknown metric 'itl' in 'itl:5' (use ttft, tpot or e2el)"),
        (["--dataset", "squad"], "--dataset must be random, jsonl, sharegpt or demo, got 'squad'"),
        (["--dataset", "jsonl"], "--dataset jsonl needs --dataset_path"),
        (["--dataset", "sharegpt", "--dataset_path", "/nonexistent/sg.json"],
         "--dataset_path: cannot read /nonexistent/sg.json"),
        (["--random_range_ratio", "1"], "--random_range_ratio must be in [0, 1), got 1"),
        (["--random_input_len", "0"], "--random_input_len must be in [1, 1048576], got 0"),
        (["--sweep", "streams=1,2"],
         "--sweep must be request_rate=V1,V2,... or max_concurrency=V1,V2,..., got "
         "'streams=1,2'"),
        (["--sweep", "request_rate=1,-2"], "--sweep: request_rate '-2' must be a number > 0 (or inf)"),
        (["--sweep", "max_concurrency=4"], "--sweep needs at least two values"),
        (["--itl_merge_us", "-1"], "--itl_merge_us must be in [0, 1000000], got -1"),
        (["extra"], "unexpected argument 'extra'"),
    ]

    def test_one_line_naming_the_flag_exit_2_nothing_sent(self):
        served = SRV.status().requests_served
        for args, message in self.CASES:
            r = run(*args)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertEqual(r.stderr, "memserve-bench: %s (see --help)\n" % message, args)
            self.assertEqual(r.stdout, "", args)
        self.assertEqual(SRV.status().requests_served, served)

    def test_bad_dataset_file_names_the_line(self):
        path = os.path.join(harness.tmpdir("bench_"), "p.jsonl")
        with open(path, "w") as f:
            f.write('{"prompt": "a"}\n{"prompt": 3}\n')
        r = run("--dataset", "jsonl", "--dataset_path", path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr, "memserve-bench: --dataset_path %s (jsonl): line 2 has no "
                                   "string \"prompt\" (see --help)\n" % path)

    def test_prompts_that_cannot_fit_the_context(self):
        path = os.path.join(harness.tmpdir("bench_"), "long.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps({"prompt": "x" * 200}) + "\n")
        r = run("--dataset", "jsonl", "--dataset_path", path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("no prompt of the dataset leaves room to generate in the model's context "
                      "(max_seqlen 128 tokens)", r.stderr)

    def test_help_and_unreachable_server(self):
        r = subprocess.run([BENCH, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--request_rate", r.stdout + r.stderr)
        r = subprocess.run([BENCH, "--server", "127.0.0.1:1", "--connect_timeout", "2s"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("memserve-bench: cannot reach server at 127.0.0.1:1", r.stderr)


class SweepTest(unittest.TestCase):

    def test_concurrency_sweep_writes_csv_json_and_plot(self):
        out = harness.tmpdir("bench_sweep_")
        r = run("--dataset", "demo", "--dataset_path",
                os.path.join(harness.DEMO_MODEL, "facts.jsonl"), "--num_prompts", "24",
                "--sweep", "max_concurrency=1,4", "--out_dir", out,
                "--plot_script", os.path.join(ROOT, "clients", "bench", "bench_plot.py"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Serving Benchmark Result (max_concurrency=1)", r.stdout)
        self.assertIn("Serving Benchmark Result (max_concurrency=4)", r.stdout)
        with open(os.path.join(out, "sweep.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([(x["parameter"], x["value"]) for x in rows],
                         [("max_concurrency", "1"), ("max_concurrency", "4")])
        for row in rows:
            level = int(row["value"])
            self.assertEqual(row["completed"], "24")
            with open(os.path.join(out, "max_concurrency_%d.json" % level)) as f:
                j = json.load(f)
            self.assertEqual(j["config"]["max_concurrency"], level)
            self.assertEqual(j["config"]["sweep"], {"parameter": "max_concurrency",
                                                    "value": str(level)})
            self.assertLessEqual(j["summary"]["max_concurrent_requests"], level)
            self.assertAlmostEqual(float(row["ttft_ms_p99"]), j["summary"]["ttft_ms"]["p99"],
                                   places=3)
        self.assertEqual(int(rows[0]["max_concurrent_requests"]), 1)
        with open(os.path.join(out, "sweep.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class ReadmeTest(unittest.TestCase):

    def test_readme_sweep_command_runs_in_under_a_minute(self):
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        self.assertIn("tools/bench_sweep.sh", readme)
        script = os.path.join(ROOT, "tools", "bench_sweep.sh")
        out = harness.tmpdir("bench_readme_")
        env = dict(os.environ, MEMSERVE=harness.memserve_binary(), MEMSERVE_BENCH=BENCH,
                   BENCH_PLOT_SCRIPT=os.path.join(ROOT, "clients", "bench", "bench_plot.py"))
        start = time.monotonic()
        r = subprocess.run([script, out], capture_output=True, text=True, timeout=120, env=env,
                           cwd=ROOT)
        elapsed = time.monotonic() - start
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertLess(elapsed, 60)
        self.assertIn("Serving Benchmark Result (request_rate=inf)", r.stdout)
        self.assertTrue(os.path.exists(os.path.join(out, "sweep.png")))


if __name__ == "__main__":
    BENCH = harness.take_path_arg("--bench")
    harness.main()
