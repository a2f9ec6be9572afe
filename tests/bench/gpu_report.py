"""The GPU benchmark summary of one tools/device_check.sh run, from its raw logs: the ceilings
(cuda_ceilings), the PyTorch baseline (torch_decode_bench.py), memserve (decode_bench --device
cuda) on the same 373M-shape checkpoint, and issue 11's goals:
  - batch 1: memserve >= 50% of the memory-bandwidth roofline (gpu_roofline.py: bytes one step
    reads / the measured copy bandwidth), and above the PyTorch CUDA-graph baseline;
  - batch 64 and 256: memserve >= 1.5x the PyTorch CUDA-graph baseline.
Numbers that are missing (a step skipped or failed) are shown as "-" and their goal as
"not measured": nothing here is estimated.

    python3 tests/bench/gpu_report.py LOG_DIR     (prints Markdown)

Then issue 12's product-key lookup (pk_section): the lab's validation and timings
(pk_lab.log: kernels/dev/product_key_lookup), the PyTorch twin (torch_pk_lookup.log), decode
tokens/s with the legacy and the product_key memory kernels (decode_bench_cuda_legacy.log and
decode_bench_cuda.log), and the issue's goals:
  - the gather >= 90% of the lab's d2d copy bandwidth at 512 and 4096 tokens, 1M x 2048;
  - the whole lookup <= 8 us at batch 1 (graph replay), 1M x 2048;
  - >= 6x the PyTorch lookup at batch 1 (graphs) and at batch 512 (eager), 1M x 2048.

Reads LOG_DIR/{ceilings,torch_decode,decode_bench_cuda,decode_bench_cpu,pool_host,pool_sharded,
pool_big_table}.log (JSON lines and memserve's load lines among other output) and
LOG_DIR/pkplus_config.json. Python 3, standard library only.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_roofline  # noqa: E402

PROMPT_TOKENS, DECODE_TOKENS = 16, 64  # tools/device_check.sh's benchmark protocol
BATCHES = (1, 8, 64, 256)


def json_lines(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def report(log_dir):
    ceil = json_lines(os.path.join(log_dir, "ceilings.log"))
    torch_lines = json_lines(os.path.join(log_dir, "torch_decode.log"))
    # decode_bench ran on the 373M model only when make_pkplus made it (else on models/demo,
    # which says so in its log: not this table's shape).
    ms = {}
    for dev in ("cuda", "cpu"):
        path = os.path.join(log_dir, f"decode_bench_{dev}.log")
        demo = False
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                demo = "no 373M model" in f.read()
        ms[dev] = [] if demo else json_lines(path)
    cfg_path = os.path.join(log_dir, "pkplus_config.json")
    cfg = gpu_roofline.load_config(cfg_path) if os.path.exists(cfg_path) else None

    copy_bw = next((j["gb_per_s"] for j in ceil if j.get("what") == "copy_d2d"), None)
    setup = next((j for j in torch_lines if j.get("what") == "setup"), {})
    bw_source = "cuda_ceilings copy_d2d"
    if copy_bw is None and setup.get("copy_gb_per_s"):
        copy_bw, bw_source = setup["copy_gb_per_s"], "torch copy (torch_decode_bench)"
    torch_tok = {(j["batch"], j["mode"]): j["tok_s"] for j in torch_lines
                 if j.get("what") == "decode"}
    mem_tok = {d: {j["batch"]: j["median_decode_tok_s"] for j in lines
                   if "median_decode_tok_s" in j} for d, lines in ms.items()}

    L = ["# GPU benchmarks (tools/device_check.sh)", ""]
    dev = next((j for j in ceil if j.get("what") == "device"), None)
    if dev:
        L.append(f"Device: {dev['name']} (sm_{dev['sm']}, {dev['sms']} SMs, "
                 f"{dev['memory_gib']} GiB, L2 {dev['l2_mib']} MiB), driver {dev['driver']}, "
                 f"runtime {dev['runtime']}.")
    if setup:
        L.append(f"PyTorch {setup.get('torch')} on {setup.get('gpu', setup.get('device'))}.")
    L += ["", "## Ceilings (cuda_ceilings)", ""]
    L.append("| measurement | GB/s | TFLOP/s | ms |")
    L.append("|---|---|---|---|")
    for j in ceil:
        if j.get("what", "").startswith("copy"):
            L.append(f"| {j['what']} ({j['mib']:.0f} MiB) | {fmt(j['gb_per_s'])} | - | "
                     f"{j['ms']:.4f} |")
        elif j.get("what") == "gemm_bf16":
            L.append(f"| gemm {j['shape']} m={j['m']} n={j['n']} k={j['k']} | "
                     f"{fmt(j['gb_per_s'])} | {fmt(j['tflops'], 2)} | {j['ms']:.4f} |")
        elif j.get("what") == "skip":
            L.append(f"| skipped: {j['reason']} | - | - | - |")
    if not ceil:
        L.append("| not measured | - | - | - |")

    L += ["", f"## Decode tokens/s, 373M pkplus shape (prompt {PROMPT_TOKENS}, "
          f"{DECODE_TOKENS} greedy steps, median of 3)", ""]
    L.append("| batch | torch eager | torch graph | memserve cuda | memserve cpu | "
             "memserve / torch graph |")
    L.append("|---|---|---|---|---|---|")
    for b in BATCHES:
        g = torch_tok.get((b, "graph"))
        m = mem_tok["cuda"].get(b)
        ratio = f"{m / g:.2f}x" if m and g else "-"
        L.append(f"| {b} | {fmt(torch_tok.get((b, 'eager')))} | {fmt(g)} | {fmt(m)} | "
                 f"{fmt(mem_tok['cpu'].get(b))} | {ratio} |")

    L += ["", "## Batch-1 roofline", ""]
    frac = {}
    if cfg and copy_bw:
        ctx = PROMPT_TOKENS + DECODE_TOKENS // 2
        parts = gpu_roofline.decode_step_bytes(cfg, 1, ctx)
        roof = gpu_roofline.roofline_tok_s(parts["total"], copy_bw)
        L.append(f"Bytes one step reads (bf16 weights and K/V, mean context {ctx}): "
                 f"{parts['total'] / 1e6:.1f} MB "
                 f"({', '.join(f'{k} {v / 1e6:.1f}' for k, v in parts.items() if k != 'total')}"
                 f"). Copy bandwidth {copy_bw:.0f} GB/s ({bw_source}): roofline "
                 f"{parts['total'] / copy_bw / 1e3:.4f} ms/step = {roof:,.0f} tokens/s.")
        L.append("")
        for name, tok in (("memserve cuda", mem_tok["cuda"].get(1)),
                          ("torch graph", torch_tok.get((1, "graph"))),
                          ("torch eager", torch_tok.get((1, "eager")))):
            if tok:
                frac[name] = tok / roof
                L.append(f"- {name}: {tok:,.1f} tokens/s = {100 * tok / roof:.1f}% of the roofline")
            else:
                L.append(f"- {name}: not measured")
    else:
        L.append("Not computed: " + ("no copy bandwidth measured" if cfg else
                                     "no pkplus_config.json (the 373M model was not made)"))

    L += ["", "## Goals (issue 11)", ""]

    def goal(text, ok):
        return f"- {text}: " + ("not measured" if ok is None else "met" if ok else "NOT met")

    m1, g1 = mem_tok["cuda"].get(1), torch_tok.get((1, "graph"))
    L.append(goal("batch 1 >= 50% of the roofline",
                  None if "memserve cuda" not in frac else frac["memserve cuda"] >= 0.5))
    L.append(goal("batch 1 above the torch CUDA-graph baseline",
                  None if not (m1 and g1) else m1 > g1))
    for b in (64, 256):
        m, g = mem_tok["cuda"].get(b), torch_tok.get((b, "graph"))
        L.append(goal(f"batch {b} >= 1.5x the torch CUDA-graph baseline",
                      None if not (m and g) else m >= 1.5 * g))
    L += pool_section(log_dir, mem_tok["cuda"])
    return "\n".join(L) + "\n" + pk_section(log_dir)


PK_SHAPE = (1024, 2048)  # the goals' shape: n_keys 1024 (1M rows) x v_dim 2048


def pk_section(log_dir):
    lab = json_lines(os.path.join(log_dir, "pk_lab.log"))
    tl = json_lines(os.path.join(log_dir, "torch_pk_lookup.log"))
    L = ["", "## Product-key lookup (issue 12: pk_lab, torch_pk_lookup)", ""]
    if not any(j.get("what") == "lookup" for j in lab):
        L.append("Not measured (pk_lab did not run on a GPU).")
    val = [j for j in lab if j.get("what") == "validate"]
    if val:
        bad = [j for j in val if not j.get("ok")]
        L.append(f"Validation against the CPU reference: {len(val) - len(bad)}/{len(val)} ok"
                 + "".join(f"; v{j['version']} n_keys {j['n_keys']} v_dim {j['v_dim']} "
                           f"tokens {j['tokens']}: {j['clear_mismatches']} clear mismatches, "
                           f"nmse {j['nmse']}" for j in bad) + ".")
    copy = next((j["gb_per_s"] for j in lab if j.get("what") == "copy"), None)
    look = {(j["version"], j["n_keys"], j["v_dim"], j["tokens"]): j["us"] for j in lab
            if j.get("what") == "lookup"}
    graph = {(j["version"], j["n_keys"], j["v_dim"]): j["us_per_lookup"] for j in lab
             if j.get("what") == "graph"}
    gather = {(j["version"], j["n_keys"], j["v_dim"], j["tokens"]): j for j in lab
              if j.get("what") == "gather"}
    t_look = {(j["n_keys"], j["v_dim"], j["tokens"]): j["us"] for j in tl
              if j.get("what") == "torch_lookup"}
    t_graph = {(j["n_keys"], j["v_dim"]): j["us_per_lookup"] for j in tl
               if j.get("what") == "torch_graph"}
    shapes = sorted({k[1:] for k in look} | set(t_look))
    if shapes:
        L += ["", "Whole lookup, microseconds (eager, CUDA events; batch 1 also per lookup in a "
              "CUDA graph of 16). v1 = legacy kernels, v2 = product_key, v3 = GEMM scores + "
              "product_key select/gather.", ""]
        L.append("| n_keys | v_dim | tokens | v1 | v2 | v3 | torch | torch / best memserve |")
        L.append("|---|---|---|---|---|---|---|---|")
        for nk, vd, t in shapes:
            us = [look.get((v, nk, vd, t)) for v in (1, 2, 3)]
            best = min((u for u in us if u), default=None)
            tu = t_look.get((nk, vd, t))
            L.append(f"| {nk} | {vd} | {t} | {fmt(us[0], 2)} | {fmt(us[1], 2)} | "
                     f"{fmt(us[2], 2)} | {fmt(tu, 2)} | "
                     + (f"{tu / best:.1f}x |" if best and tu else "- |"))
            if t == 1:
                gs = [graph.get((v, nk, vd)) for v in (1, 2, 3)]
                gbest = min((g for g in gs if g), default=None)
                tg = t_graph.get((nk, vd))
                L.append(f"| {nk} | {vd} | 1 (graph) | {fmt(gs[0], 2)} | {fmt(gs[1], 2)} | "
                         f"{fmt(gs[2], 2)} | {fmt(tg, 2)} | "
                         + (f"{tg / gbest:.1f}x |" if gbest and tg else "- |"))
    if gather:
        L += ["", f"Gather alone, GB/s (rows read + output written) and fraction of the lab's "
              f"d2d copy ({fmt(copy)} GB/s, read + written).", ""]
        L.append("| n_keys | v_dim | tokens | v1 GB/s | v2 GB/s | v2 / copy |")
        L.append("|---|---|---|---|---|---|")
        for nk, vd, t in sorted({k[1:] for k in gather}):
            g1, g2 = gather.get((1, nk, vd, t), {}), gather.get((2, nk, vd, t), {})
            L.append(f"| {nk} | {vd} | {t} | {fmt(g1.get('gb_per_s'))} | "
                     f"{fmt(g2.get('gb_per_s'))} | {fmt(g2.get('of_copy'), 3)} |")
    dec = {}
    for name in ("decode_bench_cuda_legacy", "decode_bench_cuda"):
        path = os.path.join(log_dir, name + ".log")
        demo = False
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                demo = "no 373M model" in f.read()
        dec[name] = {} if demo else {j["batch"]: j["median_decode_tok_s"]
                                     for j in json_lines(path) if "median_decode_tok_s" in j}
    L += ["", "Decode tokens/s, 373M pkplus shape: legacy memory kernels "
          "(MEMSERVE_CUDA_MEMORY_KERNELS=legacy) vs product_key.", ""]
    L.append("| batch | legacy | product_key | after / before |")
    L.append("|---|---|---|---|")
    for b in (1, 64):
        old, new = dec["decode_bench_cuda_legacy"].get(b), dec["decode_bench_cuda"].get(b)
        L.append(f"| {b} | {fmt(old)} | {fmt(new)} | "
                 + (f"{new / old:.2f}x |" if old and new else "- |"))

    def goal(text, ok):
        return f"- {text}: " + ("not measured" if ok is None else "met" if ok else "NOT met")

    nk, vd = PK_SHAPE
    L += ["", "## Goals (issue 12)", ""]
    fr = [gather.get((2, nk, vd, t), {}).get("of_copy") for t in (512, 4096)]
    L.append(goal("gather >= 90% of the d2d copy at 512 and 4096 tokens (1M x 2048)",
                  None if None in fr else min(fr) >= 0.9))
    g2 = graph.get((2, nk, vd))
    L.append(goal("whole lookup <= 8 us at batch 1, graph replay (1M x 2048)",
                  None if g2 is None else g2 <= 8.0))
    tg = t_graph.get((nk, vd))
    L.append(goal(">= 6x the PyTorch lookup at batch 1 (graphs, 1M x 2048)",
                  None if not (g2 and tg) else tg >= 6 * g2))
    best512 = min((u for u in (look.get((v, nk, vd, 512)) for v in (2, 3)) if u), default=None)
    t512 = t_look.get((nk, vd, 512))
    L.append(goal(">= 6x the PyTorch lookup at batch 512 (eager, 1M x 2048)",
                  None if not (best512 and t512) else t512 >= 6 * best512))
    return "\n".join(L) + "\n"


def load_rate(log_dir, step, pattern):
    """'gb_per_s=R (mode=M)' of the first memserve load line of `step` that matches `pattern`."""
    path = os.path.join(log_dir, f"{step}.log")
    if not os.path.exists(path):
        return "-"
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("memserve: ") and re.search(pattern, line):
                rate = re.search(r"gb_per_s=([0-9.]+)", line)
                mode = re.search(r"mode=([a-z-]+)", line)
                return (f"{rate.group(1)} GB/s" if rate else "-") + (
                    f" ({mode.group(1)})" if mode else "")
    return "-"


def pool_section(log_dir, device_tok):
    """Issue 13: decode tokens/s and load rate per memory placement (device_check.sh's
    decode_bench_cuda, pool_host, pool_sharded, pool_big_table), and the PCIe bound."""
    L = ["", "## The memory pool's placements (issue 13; batch 1 and 64, tokens/s)", ""]
    L.append("| placement | model | batch 1 | batch 64 | load |")
    L.append("|---|---|---|---|---|")
    rows = [("device", "373M", device_tok, "decode_bench_cuda",
             r"cuda_place tensor=memory\.values"),
            ("host", "373M", None, "pool_host", r"cuda_host_table"),
            ("sharded R=4, one GPU", "373M", None, "pool_sharded", r"memory_shard_upload"),
            ("host", "16M rows x 1024 (32 GiB)", None, "pool_big_table", r"cuda_host_table")]
    bound = None
    for name, model, tok, step, pattern in rows:
        lines = json_lines(os.path.join(log_dir, f"{step}.log"))
        if tok is None:
            tok = {j["batch"]: j["median_decode_tok_s"] for j in lines
                   if "median_decode_tok_s" in j}
        bound = bound or next((j for j in lines if j.get("what") == "pcie_bound"), None)
        L.append(f"| {name} | {model} | {fmt(tok.get(1))} | {fmt(tok.get(64))} | "
                 f"{load_rate(log_dir, step, pattern)} |")
    L.append("")
    if bound and bound.get("h2d_gb_per_s"):
        L.append(f"PCIe bound of the 32 GiB host table: {bound['h2d_gb_per_s']} GB/s pinned "
                 f"host-to-device / {bound['bytes_per_token']} bytes gathered per token = "
                 f"{bound['tok_s']:,} tokens/s.")
    else:
        L.append("PCIe bound: not measured.")
    return L


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print("usage: gpu_report.py LOG_DIR", file=sys.stderr)
        return 2
    sys.stdout.write(report(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
