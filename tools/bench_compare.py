#!/usr/bin/python3
"""Side-by-side performance of two commits: the engine alone and the server.

Builds BASE and NEW (any git revisions) in their own worktrees, then measures
them alternately on the same machine in one run, so drift and noise hit both:

  engine  tests/bench/decode_bench --batch B (B sequences decoded in lockstep,
          greedy, prefill not counted), B in --batches;
  server  `memserve serve` + memserve-loadgen at S streams (greedy, ignore_eos,
          --max_tokens each call), S in --streams.

on the demo model and the d1024 test model (tools/bench_server.sh describes it:
dim 1024, 8 layers, bf16 dense weights, memory layers 2 and 6). Each round runs
every case on both revisions, in the order BASE, NEW on even rounds and NEW,
BASE on odd ones. The report gives per case the median tokens/s of each side
and NEW/BASE, plus every raw line.

  /usr/bin/python3 tools/bench_compare.py BASE NEW [--rounds 3] [--out docs/perf/X.md]

Needs an otherwise idle machine: run it when nothing else builds or runs.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PY = "/usr/bin/python3"
TARGETS = ["//server:memserve", "//clients/loadgen:memserve-loadgen", "//tests/bench:decode_bench"]
BINARIES = {"memserve": "server/memserve", "loadgen": "clients/loadgen/memserve-loadgen",
            "decode_bench": "tests/bench/decode_bench"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def build(rev, work):
    """Builds `rev` in WORK/src-REV (a detached worktree); copies the binaries to
    WORK/bin-REV. Returns (full commit hash, bin dir)."""
    commit = run(["git", "-C", ROOT, "rev-parse", rev], capture_output=True).stdout.strip()
    src = os.path.join(work, "src-" + commit[:10])
    out = os.path.join(work, "bin-" + commit[:10])
    if not os.path.isdir(src):
        run(["git", "-C", ROOT, "worktree", "add", "--detach", src, commit])
    log("building %s (%s)" % (rev, commit[:10]))
    run(["bazel", "build"] + TARGETS, cwd=src)
    os.makedirs(out, exist_ok=True)
    for name, path in BINARIES.items():
        shutil.copy2(os.path.join(src, "bazel-bin", path), os.path.join(out, name))
    return commit, out


def d1024_model(work):
    model = os.path.join(work, "d1024", "serve_bf16")
    if not os.path.exists(os.path.join(model, "config.json")):
        ckpt = os.path.join(work, "d1024", "ckpt")
        run([PY, os.path.join(ROOT, "tools/make_test_model.py"), ckpt, "--dim", "1024",
             "--n_layers", "8", "--n_heads", "16", "--n_kv_heads", "16", "--multiple_of", "256",
             "--mem_layers", "2,6", "--mem_n_keys", "256", "--mem_heads", "4", "--mem_knn", "32",
             "--mem_k_dim", "512", "--max_seqlen", "256", "--rope_theta", "500000"])
        run([PY, os.path.join(ROOT, "tools/convert_lingua.py"), ckpt, model, "--dtype",
             "bfloat16"])
    return model


def engine_case(bins, model, batch, decode_tokens, scale, raw):
    cmd = [os.path.join(bins, "decode_bench"), "--model", model, "--prompt_tokens", "31",
           "--decode_tokens", str(decode_tokens), "--runs", str(scale), "--batch", str(batch)]
    out = run(cmd, capture_output=True).stdout
    raw.append("$ " + " ".join(cmd) + "\n" + out)
    return json.loads(out.strip().splitlines()[-1])["median_decode_tok_s"]


class Server:
    def __init__(self, bins, model, raw):
        self.bins, self.raw = bins, raw
        self.dir = tempfile.mkdtemp()
        port_file = os.path.join(self.dir, "port")
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(bins, "memserve"), "serve", "--model", model, "--listen",
             "127.0.0.1:0", "--port_file", port_file], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + open(self.log.name).read()[-2000:])
            log_text = open(self.log.name).read()
            if os.path.exists(port_file) and "ready" in log_text:
                self.port = int(open(port_file).read().strip())
                break
            if time.time() > deadline:
                raise RuntimeError("server not ready after 300 s")
            time.sleep(0.2)

    def level(self, streams, max_tokens, scale):
        out = os.path.join(self.dir, "level.json")
        cmd = [os.path.join(self.bins, "loadgen"), "--server", "127.0.0.1:%d" % self.port,
               "--streams", str(streams), "--requests", str(scale * max(4, 4 * streams)),
               "--max_tokens", str(max_tokens), "--json_out", out]
        text = run(cmd, capture_output=True).stdout
        report = json.load(open(out))
        self.raw.append("$ " + " ".join(cmd) + "\n" + text)
        if report.get("failed", 0) or report.get("ok") != report.get("requests"):
            raise RuntimeError("loadgen calls failed: %s" % report.get("errors"))
        return report["tokens_per_s"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--streams", default="1,16")
    ap.add_argument("--models", default="demo,d1024")
    ap.add_argument("--max_tokens", type=int, default=96)
    ap.add_argument("--demo_scale", type=int, default=20,
                    help="the demo model's cases repeat this many times (decode_bench --runs, "
                    "loadgen requests x N): one demo pass takes ~15 ms, too short to time alone")
    ap.add_argument("--work", default="/tmp/memserve-bench-compare")
    ap.add_argument("--out", default="", help="markdown report (default: stdout)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    sides = {}
    for name, rev in (("base", a.base), ("new", a.new)):
        sides[name] = build(rev, a.work)
    wanted = a.models.split(",")
    models = {}
    if "demo" in wanted:
        models["demo"] = os.path.join(ROOT, "models/demo")
    if "d1024" in wanted:
        models["d1024"] = d1024_model(a.work)
    scales = {"demo": a.demo_scale, "d1024": 1}
    batches = [int(x) for x in a.batches.split(",")]
    streams = [int(x) for x in a.streams.split(",")]
    results = {}  # (model, case) -> side -> [tok/s per round]
    raw = []
    started = time.time()
    for rnd in range(a.rounds):
        order = ["base", "new"] if rnd % 2 == 0 else ["new", "base"]
        for model_name, model in models.items():
            for side in order:
                bins = sides[side][1]
                raw.append("# round %d, %s, %s (%s)" % (rnd, model_name, side, sides[side][0][:10]))
                for b in batches:
                    v = engine_case(bins, model, b, a.max_tokens, scales[model_name], raw)
                    results.setdefault((model_name, "engine B=%d" % b), {}).setdefault(
                        side, []).append(v)
                server = Server(bins, model, raw)
                try:
                    for s in streams:
                        v = server.level(s, a.max_tokens, scales[model_name])
                        results.setdefault((model_name, "server %d stream%s" % (
                            s, "" if s == 1 else "s")), {}).setdefault(side, []).append(v)
                finally:
                    server.stop()
                log("round %d %s %s done" % (rnd, model_name, side))
    elapsed = time.time() - started

    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    lines = []
    lines.append("# Performance: %s vs %s\n" % (sides["new"][0][:10], sides["base"][0][:10]))
    lines.append("Command: `/usr/bin/python3 %s`  " % " ".join(
        ["tools/bench_compare.py"] + sys.argv[1:]))
    lines.append("Date: %s; machine: %s, %d cores (%s, %s); %d rounds in %.0f s.\n" % (
        datetime.date.today().isoformat(), cpu, os.cpu_count(), platform.machine(),
        socket.gethostname(), a.rounds, elapsed))
    lines.append("base = %s, new = %s. Decode tokens/s (higher is better), median of the "
                 "rounds; the cases alternate base/new within each round.\n" % (
                     sides["base"][0], sides["new"][0]))
    lines.append("| model | case | base | new | new / base | base rounds | new rounds |")
    lines.append("|---|---|---|---|---|---|---|")
    for (model_name, case), by_side in results.items():
        mb = statistics.median(by_side["base"])
        mn = statistics.median(by_side["new"])
        lines.append("| %s | %s | %.1f | %.1f | %.3f | %s | %s |" % (
            model_name, case, mb, mn, mn / mb, " ".join("%.0f" % v for v in by_side["base"]),
            " ".join("%.0f" % v for v in by_side["new"])))
    lines.append("\n## Raw output\n\n```")
    lines.extend(raw)
    lines.append("```")
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        log("wrote " + a.out)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
