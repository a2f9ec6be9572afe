#!/usr/bin/python3
"""Prints a memserve-bench sweep CSV (OUT_DIR/sweep.csv) as a Markdown table:
per level the requests that succeeded, request throughput, goodput (when the
sweep had --goodput), output and total token throughput, the peak number of
requests in flight, and the median and p99 of TTFT, TPOT, ITL and E2EL (ms).

    /usr/bin/python3 clients/bench/sweep_table.py SWEEP.csv
"""
import csv
import sys

COLUMNS = (("completed", "ok"), ("request_throughput", "req/s"),
           ("request_goodput", "goodput req/s"), ("output_throughput", "output tok/s"),
           ("total_token_throughput", "total tok/s"), ("max_concurrent_requests", "peak in flight"),
           ("ttft_ms_median", "TTFT p50 ms"), ("ttft_ms_p99", "TTFT p99"),
           ("tpot_ms_median", "TPOT p50"), ("tpot_ms_p99", "TPOT p99"),
           ("itl_ms_median", "ITL p50"), ("itl_ms_p99", "ITL p99"),
           ("e2el_ms_median", "E2EL p50"), ("e2el_ms_p99", "E2EL p99"))


def cell(key, text):
    if text == "" or key in ("completed", "max_concurrent_requests"):
        return text or "-"
    x = float(text)
    return "%.1f" % x if x >= 100 else "%.2f" % x


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: sweep_table.py SWEEP.csv")
    with open(argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit("sweep_table.py: %s has no rows" % argv[1])
    cols = [(k, name) for k, name in COLUMNS
            if k in rows[0] and any(r[k] != "" for r in rows)]
    print("| %s | %s |" % (rows[0]["parameter"], " | ".join(name for _, name in cols)))
    print("|---|" + "---|" * len(cols))
    for r in rows:
        print("| %s | %s |" % (r["value"], " | ".join(cell(k, r[k]) for k, _ in cols)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
