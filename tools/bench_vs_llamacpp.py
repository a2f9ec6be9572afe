#!/usr/bin/python3
"""memserve vs llama.cpp on the CPU, same dense random Llama, same threads (issue 19).

Driven by tools/bench_vs_llamacpp.sh (which builds memserve's binaries and the llama.cpp-side
logprob helper first); see that script for the usage. Steps, for each dtype:
  1. memserve's serving checkpoint from tools/make_test_model.py (make_serving_model, no memory
     layers), and the SAME weights as a GGUF file (llama architecture) written with the gguf-py
     of the reader's llama.cpp source tree. Q/K are written unpermuted: memserve and Meta use the
     interleaved RoPE layout, which is llama.cpp's LLAMA_ROPE_TYPE_NORM for the llama
     architecture (its HF converter permutes HF's rotate-half Q/K back to exactly this layout).
     Norm weights are widened to f32 (exact). Vocabulary: tokenizer "none" with vocab_size
     entries, so both sides take the same token ids (memserve's bytes tokenizer: BOS 256).
  2. Agreement: `memserve generate --output jsonl --kv_cache_dtype f32` greedy tokens + their
     logprobs; llama.cpp (f32 K/V) is teacher-forced along memserve's tokens and reports its own
     argmax and the logprob of memserve's token at each step (flash attention off there: its CPU
     path rounds to f16, ~1e-3 in logprob). Pass: every |logprob difference|
     <= the tolerance, and wherever the argmaxes differ, llama.cpp's logprob of memserve's token
     is within the tolerance of its best (a near-tie). A failure stops the run (exit 1).
  3. Rounds, alternating memserve then llama.cpp, each a fresh process per side and workload:
     decode b=1 (16-token prompt, 64 greedy steps), decode 16 sequences (16 x 16-token prompts,
     64 steps each; aggregate tokens/s), prefill 256 tokens (one sequence). memserve: its
     tests/bench decode_bench (one warm-up run, then one timed run, per workload). llama.cpp: its
     llama-batched-bench with the weights read into memory (--load-mode none, or --no-mmap on
     builds without it), each workload run twice in one process and the second one kept (the
     first is its warm-up). Same thread count on both sides (-t/-tb, --threads). llama.cpp's K/V
     cache type and flash attention are its defaults (f16, auto: its fastest on the CPU) unless
     --llama_kv_type / --llama_fa say otherwise (f32 K/V with flash attention on is a slow path
     in llama.cpp: ~3x slower decode; f32 K/V with it off is close to f16's speed).
  4. A markdown report (tables: min / median / max tokens/s per side, median ratio) followed by
     every command and its raw output.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense shapes (no memory layers). 373m: the pkplus preset's dense part (docs/model.md, "Sizes").
SHAPES = {
    "373m": dict(dim=1024, n_layers=24, n_heads=16, n_kv_heads=16, multiple_of=256,
                 vocab=32000, max_seqlen=1024, rope_theta=500000.0),
    "small": dict(dim=256, n_layers=4, n_heads=4, n_kv_heads=4, multiple_of=256,
                  vocab=None, max_seqlen=1024, rope_theta=10000.0),
}
DTYPES = {"bf16": "bfloat16", "f32": "float32"}

# Workloads: (key, label).
WORKLOADS = [("decode1", "decode b=1"), ("decode16", "decode 16 sequences"),
             ("prefill256", "prefill 256 tokens")]
DECODE_PROMPT, DECODE_STEPS, PREFILL_TOKENS, BATCH = 16, 64, 256, 16

AGREE_PROMPT = "The quick brown fox jumps over the lazy dog. "
AGREE_STEPS = 32
BOS_ID = 256  # memserve's bytes tokenizer (docs/model.md, "Tokenizers")


class BenchError(Exception):
    pass


class Log:
    """Collects every command and its output for the report's raw section."""

    def __init__(self):
        self.parts = []

    def run(self, cmd, env=None):
        t0 = time.monotonic()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", env=env)
        dt = time.monotonic() - t0
        self.parts.append(f"$ {shlex.join(cmd)}   # {dt:.1f} s, exit {p.returncode}\n{p.stdout}")
        print(f"[bench_vs_llamacpp] {shlex.join(cmd[:3])} ... {dt:.1f} s", file=sys.stderr)
        if p.returncode != 0:
            tail = "\n".join(p.stdout.splitlines()[-15:])
            raise BenchError(f"command failed (exit {p.returncode}): {shlex.join(cmd)}\n{tail}")
        return p.stdout

    def note(self, text):
        self.parts.append(text)


# --------------------------------------------------------------------------------------------
# Models


def make_models(work, shape, dtype, gguf):
    """memserve checkpoint dir + GGUF path for one (shape, dtype); reused when already made."""
    import make_test_model
    base = os.path.join(work, f"{shape}-{dtype}")
    serve = os.path.join(base, "serve")
    path = os.path.join(base, "model.gguf")
    if not os.path.exists(os.path.join(serve, "config.json")):
        kw = dict(SHAPES[shape], mem_layers="")
        if kw["vocab"] is None:
            del kw["vocab"]
        make_test_model.make_serving_model(serve, dtype=DTYPES[dtype], device="cpu", **kw)
    if not os.path.exists(path):
        write_gguf(serve, path + ".part", gguf)
        os.replace(path + ".part", path)
    return serve, path


def write_gguf(serve_dir, path, gguf):
    """The serving checkpoint's dense Llama as GGUF (llama architecture), same values."""
    import torch
    from safetensors_io import SafetensorsFile
    with open(os.path.join(serve_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("memory"):
        raise BenchError(f"{serve_dir}: has memory layers; the comparison needs a dense model")
    st = SafetensorsFile(os.path.join(serve_dir, "model.safetensors"))
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("memserve bench_vs_llamacpp random dense llama")
    w.add_context_length(cfg["max_seqlen"])
    w.add_embedding_length(cfg["dim"])
    w.add_block_count(cfg["n_layers"])
    w.add_feed_forward_length(cfg["ffn_hidden_dim"])
    w.add_head_count(cfg["n_heads"])
    w.add_head_count_kv(cfg["n_kv_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_tokenizer_model("none")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if cfg["source"]["dense_dtype"] == "bfloat16"
                    else gguf.LlamaFileType.ALL_F32)
    names = {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
             "output.weight": "output.weight"}
    per_layer = {"attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
                 "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate",
                 "feed_forward.w2": "ffn_down", "feed_forward.w3": "ffn_up",
                 "attention_norm": "attn_norm", "ffn_norm": "ffn_norm"}
    for i in range(cfg["n_layers"]):
        for src, dst in per_layer.items():
            names[f"layers.{i}.{src}.weight"] = f"blk.{i}.{dst}.weight"
    if set(names) != set(st.order):
        raise BenchError(f"{serve_dir}: unexpected tensors {sorted(set(names) ^ set(st.order))}")
    for name in st.order:
        t = st.tensor(name).contiguous()
        if t.dim() == 1:  # norms: f32 in GGUF as llama.cpp's converter writes them (exact)
            w.add_tensor(names[name], t.to(torch.float32).numpy())
        elif t.dtype == torch.bfloat16:
            w.add_tensor(names[name], t.view(torch.int16).numpy(),
                         raw_dtype=gguf.GGMLQuantizationType.BF16)
        elif t.dtype == torch.float32:
            w.add_tensor(names[name], t.numpy())
        else:
            raise BenchError(f"{name}: unexpected dtype {t.dtype}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --------------------------------------------------------------------------------------------
# Agreement


def check_agreement(log, a, serve, gguf_path, dtype, precision):
    prompt_ids = [BOS_ID] + list(AGREE_PROMPT.encode())
    out = log.run([a.memserve, "generate", "--model", serve, "--prompt", AGREE_PROMPT,
                   "--max_tokens", str(AGREE_STEPS), "--ignore_eos", "--output", "jsonl",
                   "--kv_cache_dtype", "f32", "--threads", str(a.threads),
                   "--cpu_matmul_precision", precision])
    ms = [json.loads(line) for line in out.splitlines() if line.startswith('{"id"')]
    if len(ms) != AGREE_STEPS:
        raise BenchError(f"memserve generate gave {len(ms)} tokens, expected {AGREE_STEPS}")
    ids = [t["id"] for t in ms]
    out = log.run([a.logprobs_bin, gguf_path, str(a.threads), ",".join(map(str, prompt_ids)),
                   ",".join(map(str, ids))])
    lc = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if len(lc) != AGREE_STEPS:
        raise BenchError(f"llamacpp_logprobs gave {len(lc)} steps, expected {AGREE_STEPS}")
    tol = a.tol_f32 if dtype == "f32" else a.tol_bf16
    max_diff = max(abs(m["logprob"] - l["forced_logprob"]) for m, l in zip(ms, lc))
    mismatches = [i for i, (m, l) in enumerate(zip(ms, lc)) if m["id"] != l["argmax"]]
    bad_ties = [i for i in mismatches if lc[i]["argmax_logprob"] - lc[i]["forced_logprob"] > tol]
    ok = max_diff <= tol and not bad_ties
    summary = (f"{'PASS' if ok else 'FAIL'}: {AGREE_STEPS} greedy steps, memserve's tokens "
               f"{'=' if not mismatches else '!='} llama.cpp's argmax"
               f"{'' if not mismatches else f' at steps {mismatches} (near-ties: {not bad_ties})'}"
               f"; max |logprob diff| {max_diff:.2e} (tolerance {tol:g})")
    log.note(f"agreement {dtype} ({precision}): {summary}\n")
    if not ok:
        raise BenchError(f"agreement {dtype} ({precision}): {summary}")
    return summary


# --------------------------------------------------------------------------------------------
# Rounds


def memserve_round(log, a, serve, precision):
    """{workload: tokens/s} from decode_bench (one warm-up + one timed run per workload)."""
    common = [a.decode_bench, "--model", serve, "--threads", str(a.threads), "--runs", "1",
              "--cpu_matmul_precision", precision]
    out = log.run(common + ["--batch", f"1,{BATCH}", "--prompt_tokens", str(DECODE_PROMPT),
                            "--decode_tokens", str(DECODE_STEPS)])
    res = {}
    for line in out.splitlines():
        if line.startswith("{") and '"run"' in line:
            j = json.loads(line)
            res["decode1" if j["batch"] == 1 else "decode16"] = j["decode_tok_s"]
    out = log.run(common + ["--batch", "1", "--prompt_tokens", str(PREFILL_TOKENS),
                            "--decode_tokens", "1"])
    for line in out.splitlines():
        if line.startswith("{") and '"run"' in line:
            j = json.loads(line)
            res["prefill256"] = PREFILL_TOKENS / j["prefill_s"]
    if set(res) != {k for k, _ in WORKLOADS}:
        raise BenchError(f"decode_bench output lacks workloads: {sorted(res)}")
    return res


def llama_round(log, a, gguf_path):
    """{workload: tokens/s} from llama-batched-bench (each workload twice, the second kept)."""
    common = [a.batched_bench, "-m", gguf_path, "-t", str(a.threads), "-tb", str(a.threads),
              *a.load_flags, "-ngl", "0", "-ctk", a.llama_kv_type, "-ctv", a.llama_kv_type,
              "-fa", a.llama_fa,
              "--output-format", "jsonl"]
    res = {}
    n_ctx = BATCH * 128  # >= BATCH * (DECODE_PROMPT + DECODE_STEPS), 128 cells per sequence
    out = log.run(common + ["-c", str(n_ctx), "-npp", str(DECODE_PROMPT), "-ntg",
                            str(DECODE_STEPS), "-npl", f"1,1,{BATCH},{BATCH}"])
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"n_kv_max"')]
    for r in rows:  # later rows overwrite the warm-up rows
        res["decode1" if r["pl"] == 1 else "decode16"] = r["speed_tg"]
    out = log.run(common + ["-c", str(PREFILL_TOKENS + 8), "-npp",
                            f"{PREFILL_TOKENS},{PREFILL_TOKENS}", "-ntg", "1", "-npl", "1"])
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"n_kv_max"')]
    if rows:
        res["prefill256"] = rows[-1]["speed_pp"]
    if set(res) != {k for k, _ in WORKLOADS}:
        raise BenchError(f"llama-batched-bench output lacks workloads: {sorted(res)}")
    return res


def fmt(v):
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama_build", required=True)
    ap.add_argument("--llama_src", required=True)
    ap.add_argument("--batched_bench", required=True)
    ap.add_argument("--logprobs_bin", required=True)
    ap.add_argument("--memserve", required=True)
    ap.add_argument("--decode_bench", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="373m")
    ap.add_argument("--dtypes", default="bf16,f32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama_kv_type", choices=["f32", "f16"], default="f16")
    ap.add_argument("--llama_fa", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--precisions", default="exact",
                    help="memserve --cpu_matmul_precision values to run, comma-separated (bf16 "
                         "applies to bf16 weights only)")
    ap.add_argument("--tol_f32", type=float, default=2e-5)
    ap.add_argument("--tol_bf16", type=float, default=0.1)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="", help="the command line to print in the report")
    a = ap.parse_args(argv)
    dtypes = [d for d in a.dtypes.split(",") if d]
    if not dtypes or any(d not in DTYPES for d in dtypes):
        ap.error(f"--dtypes: a comma-separated subset of {sorted(DTYPES)}, got {a.dtypes!r}")
    if a.rounds < 1 or a.threads < 1:
        ap.error("--rounds and --threads must be >= 1")
    precisions = [p for p in a.precisions.split(",") if p]
    if not precisions or any(p not in ("exact", "bf16") for p in precisions):
        ap.error(f"--precisions: a comma-separated subset of exact,bf16, got {a.precisions!r}")

    sys.path.insert(0, os.path.join(a.llama_src, "gguf-py"))
    try:
        import gguf
    except ImportError as e:
        print(f"error: --llama_src: cannot import gguf from {a.llama_src}/gguf-py ({e})",
              file=sys.stderr)
        return 2
    log = Log()
    a.load_flags = []
    try:
        help_text = subprocess.run([a.batched_bench, "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace").stdout
        a.load_flags = ["--load-mode", "none"] if "--load-mode" in help_text else ["--no-mmap"]
        log.run([a.batched_bench, "--version"])
        os.makedirs(a.work, exist_ok=True)
        # dtype -> ({precision: agreement}, {workload: ({precision: [memserve]}, [llama])})
        results = {}
        for dtype in dtypes:
            serve, gguf_path = make_models(a.work, a.shape, dtype, gguf)
            # bf16 matmuls change nothing for f32 weights.
            precs = [p for p in precisions if p == "exact" or dtype == "bf16"]
            agreement = {p: check_agreement(log, a, serve, gguf_path, dtype, p) for p in precs}
            runs = {k: ({p: [] for p in precs}, []) for k, _ in WORKLOADS}
            for r in range(a.rounds):
                log.note(f"--- {a.shape} {dtype} round {r + 1}/{a.rounds}\n")
                for p in precs:
                    m = memserve_round(log, a, serve, p)
                    for k, _ in WORKLOADS:
                        runs[k][0][p].append(m[k])
                l = llama_round(log, a, gguf_path)
                for k, _ in WORKLOADS:
                    runs[k][1].append(l[k])
            results[dtype] = (agreement, runs)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        write_report(a, log, {}, failed=str(e))
        return 1
    write_report(a, log, results)
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


def llama_build_info(log_text):
    m = re.search(r"(?:version|build): (\d+) \(([0-9a-f]+)\)", log_text)
    if m:
        return f"b{m.group(1)} ({m.group(2)})"
    # A tree without git history (e.g. from a source release): "version: 0.5.0 (build 0,
    # commit 0ad4a86)".
    m = re.search(r"version: (\S+) \(build (\d+), commit ([0-9a-f]+)\)", log_text)
    if m:
        return f"{m.group(1)}, commit {m.group(3)}"
    return "unknown (not in its --version output)"


def write_report(a, log, results, failed=None):
    raw = "\n".join(log.parts)
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                stdout=subprocess.PIPE, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    lines = [f"# memserve vs llama.cpp, CPU, shape {a.shape}", ""]
    if a.command:
        lines.append(f"- command: `{a.command}`")
    lines.append(f"- date: {datetime.datetime.utcnow().isoformat(timespec='seconds')}Z; machine: "
                 f"{os.cpu_count()} cores, {cpu}, {platform.machine()}")
    lines.append(f"- memserve commit {commit}; llama.cpp build {llama_build_info(raw)} at "
                 f"{a.llama_build} (source {a.llama_src})")
    rounds = f"{a.rounds} round{'s' if a.rounds != 1 else ''}"
    lines.append(f"- threads {a.threads} on both sides; {rounds}, alternating memserve "
                 f"then llama.cpp; llama.cpp weights in memory ({' '.join(a.load_flags)}), "
                 f"K/V cache {a.llama_kv_type}, flash attention {a.llama_fa}; memserve K/V cache "
                 f"f32 (its CPU default)" + (
                     "; NOTE: llama.cpp's flash attention with an f32 K/V cache is a slow path "
                     "(use --llama_fa off with f32)" if a.llama_kv_type == "f32" and
                     a.llama_fa != "off" else ""))
    lines.append(f"- workloads: decode b=1 ({DECODE_PROMPT}-token prompt, {DECODE_STEPS} steps), "
                 f"decode {BATCH} sequences ({BATCH} x {DECODE_PROMPT}-token prompts, "
                 f"{DECODE_STEPS} steps, aggregate), prefill {PREFILL_TOKENS} tokens")
    lines.append("")
    if failed:
        lines += ["**FAILED**: " + failed.replace("\n", " "), ""]
    for dtype, (agreement, runs) in results.items():
        lines.append(f"## {a.shape}, {dtype} weights")
        lines.append("")
        for p, text in agreement.items():
            lines.append(f"Agreement, memserve --cpu_matmul_precision {p} (f32 K/V both sides, "
                         f"llama.cpp flash attention off): {text}")
            lines.append("")
        lines.append("| workload | memserve matmuls | memserve tok/s min / median / max | "
                     "llama.cpp tok/s min / median / max | memserve / llama.cpp (medians) |")
        lines.append("|---|---|---|---|---|")
        for k, label in WORKLOADS:
            ms, l = runs[k]
            lm = statistics.median(l)
            for p, m in ms.items():
                mm = statistics.median(m)
                lines.append(f"| {label} | {p} | {fmt(min(m))} / {fmt(mm)} / {fmt(max(m))} | "
                             f"{fmt(min(l))} / {fmt(lm)} / {fmt(max(l))} | {mm / lm:.2f}x |")
        lines.append("")
    lines += ["## Raw output", "", "```", raw.rstrip("\n"), "```", ""]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
