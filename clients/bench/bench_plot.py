#!/usr/bin/python3
"""Plots a memserve-bench sweep: latency (median and the highest percentile in
the CSV, log scale) of TTFT, TPOT, ITL and E2EL against output token
throughput, one point per sweep level, labelled with the level's value.

    /usr/bin/python3 clients/bench/bench_plot.py SWEEP.csv OUT.png

The CSV is the one `memserve-bench --sweep ... --out_dir D` writes (D/sweep.csv);
memserve-bench runs this script itself to write D/sweep.png. Needs Debian's
python3-matplotlib (tools/setup.sh installs it).
"""
import csv
import sys

METRICS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL (per token)"),
           ("e2el_ms", "E2EL"))


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit("bench_plot.py: %s has no rows" % path)
    return rows


def highest_percentile(columns):
    """The name ('p99', 'p99.9', ...) of the highest percentile column of TTFT."""
    best = None
    for c in columns:
        if c.startswith("ttft_ms_p"):
            p = float(c[len("ttft_ms_p"):])
            if best is None or p > best[0]:
                best = (p, c[len("ttft_ms_"):])
    return best[1] if best else None


def value(row, key):
    v = row.get(key, "")
    return float(v) if v not in ("", None) else float("nan")


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: bench_plot.py SWEEP.csv OUT.png")
    rows = read(argv[1])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parameter = rows[0]["parameter"]
    tail = highest_percentile(rows[0].keys())
    x = [value(r, "output_throughput") for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (key, name) in zip(axes.flat, METRICS):
        ax.plot(x, [value(r, key + "_median") for r in rows], "o-", label="median")
        if tail:
            ax.plot(x, [value(r, key + "_" + tail) for r in rows], "s--", label=tail)
        for xi, r in zip(x, rows):
            ax.annotate(r["value"], (xi, value(r, key + "_median")), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("output throughput (tokens/s)")
        ax.set_ylabel("ms (log scale)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    failed = sum(int(r["failed"]) for r in rows)
    fig.suptitle("memserve-bench sweep over %s (point labels: %s)%s" %
                 (parameter, parameter, "; %d failed requests" % failed if failed else ""))
    fig.tight_layout()
    fig.savefig(argv[2], dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
