#!/usr/bin/env python3
"""One bar chart of memserve / llama.cpp from tools/bench_vs_llamacpp.sh reports.

    /usr/bin/python3 tools/plot_vs_llamacpp.py REPORT.md [REPORT.md ...] --out FIGURE.svg

Reads each report's tables (## SHAPE, DTYPE weights; rows: workload, memserve matmuls,
memserve tok/s min / median / max, llama.cpp tok/s min / median / max, ratio of medians) and
draws, per workload, one bar per (shape, weights, memserve matmuls): the ratio of the medians,
with the min/max spread of memserve's rounds over llama.cpp's median as an error bar and a line
at 1 (parity). Needs matplotlib (Debian: python3-matplotlib)."""
import argparse
import re
import sys


def parse_report(path):
    """[(shape, dtype, precision, workload, ratio, lo, hi)] from one report."""
    rows = []
    section = None
    with open(path) as f:
        for line in f:
            m = re.match(r"## (\S+), (\S+) weights", line)
            if m:
                section = (m.group(1), m.group(2))
                continue
            if line.startswith("## "):
                section = None
            if section is None or not line.startswith("| ") or "---" in line:
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 5 or cells[0] == "workload":
                continue
            workload, precision, ms, ll, _ = cells
            m_min, m_med, m_max = (float(v) for v in ms.split(" / "))
            l_med = float(ll.split(" / ")[1])
            rows.append((section[0], section[1], precision, workload, m_med / l_med,
                         m_min / l_med, m_max / l_med))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="memserve / llama.cpp tokens/s (medians; bars: memserve's "
                                        "min-max)")
    a = ap.parse_args(argv)
    rows = [r for path in a.reports for r in parse_report(path)]
    if not rows:
        print(f"error: no result tables in {a.reports}", file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r[3] for r in rows))
    series = list(dict.fromkeys((r[0], r[1], r[2]) for r in rows))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs, ys, errs = [], [], [[], []]
        for j, w in enumerate(workloads):
            for r in rows:
                if (r[0], r[1], r[2]) == s and r[3] == w:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(r[4])
                    errs[0].append(max(0.0, r[4] - r[5]))
                    errs[1].append(max(0.0, r[6] - r[4]))
        label = f"{s[0]}, {s[1]} weights" + (f", {s[2]} matmuls" if s[2] != "exact" else "")
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=label)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels(workloads)
    ax.set_ylabel("memserve / llama.cpp")
    ax.set_title(a.title, fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(a.out)
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
