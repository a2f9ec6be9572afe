"""Batch-1 decode throughput of the PyTorch reference (tests/reference), the
baseline for docs/perf/cpu.md. Same protocol as decode_bench: random prompt,
greedy decode through a KV cache, one warm-up run, median of --runs.

Run: /usr/bin/python3 tests/bench/reference_decode_bench.py CKPT_DIR
"""
import argparse
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from reference_model import ReferenceModel  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt_dir")
    ap.add_argument("--prompt_tokens", type=int, default=16)
    ap.add_argument("--decode_tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    m = ReferenceModel.load(a.ckpt_dir)
    rng = random.Random(0)
    prompt = [rng.randrange(m.vocab_size) for _ in range(a.prompt_tokens)]
    rates = []
    for run in range(a.runs + 1):
        state = m.new_cache()
        t0 = time.perf_counter()
        logits = m.step(state, prompt)
        t1 = time.perf_counter()
        for _ in range(a.decode_tokens):
            logits = m.step(state, [int(torch.argmax(logits))])
        t2 = time.perf_counter()
        if run == 0:
            continue
        rate = a.decode_tokens / (t2 - t1)
        rates.append(rate)
        print(json.dumps({"engine": "pytorch_reference", "run": run,
                          "prefill_tokens": a.prompt_tokens, "prefill_s": round(t1 - t0, 4),
                          "decode_tokens": a.decode_tokens, "decode_s": round(t2 - t1, 4),
                          "decode_tok_s": round(rate, 2)}))
    rates.sort()
    print(json.dumps({"engine": "pytorch_reference", "torch": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "median_decode_tok_s": round(rates[len(rates) // 2], 2)}))


if __name__ == "__main__":
    main()
