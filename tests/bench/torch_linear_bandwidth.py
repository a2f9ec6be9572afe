"""Weight-streaming bandwidth of PyTorch's batch-1 linear on this machine (the
bound the reference's decode runs into). Prints one JSON line per variant.

Run: /usr/bin/python3 tests/bench/torch_linear_bandwidth.py
"""
import json
import os
import time

import torch


def main():
    torch.set_num_threads(os.cpu_count())
    w = torch.randn(2816, 1024)  # one 373M-shape FFN matrix, fp32
    x = torch.randn(1, 1024)
    variants = {"x@W.T": lambda: x @ w.T,
                "F.linear": lambda: torch.nn.functional.linear(x, w),
                "mv": lambda: torch.mv(w, x[0])}
    for name, f in variants.items():
        f()
        t = time.perf_counter()
        n = 300
        for _ in range(n):
            f()
        dt = (time.perf_counter() - t) / n
        print(json.dumps({"op": name, "shape": [2816, 1024], "ms": round(dt * 1e3, 3),
                          "weight_GB_per_s": round(w.numel() * 4 / dt / 1e9, 1)}))


if __name__ == "__main__":
    main()
