"""The product-key lookup alone in PyTorch (the training code's way), beside kernels/dev's lab.

The same lookup as kernels/dev/product_key_lookup.cu and the same shapes (heads 4, knn 32, k_dim
512, n_keys 1024 and 4096, v_dim 1024 and 2048, tokens 1, 8, 64, 512, 4096), written as
torch_decode_bench.py writes the memory layer: sub-key scores by einsum and both top-k stages in
bf16 (over all knn x knn pairs), softmax in fp32, the read by F.embedding_bag (mode "sum",
per-sample weights, one bag of heads x knn rows per token). Timed with CUDA events after warm-up
(median of --reps), eager and, at batch 1, as a CUDA graph of 16 lookups on different queries
(microseconds per lookup), as the lab times its versions. The table is random bf16
[n_keys^2, v_dim], contiguous (embedding_bag would copy a strided view; the lab reads v_dim 1024
as a column slice of a 2048-wide table).

Prints one JSON line per measurement ("what": "torch_lookup" | "torch_graph"). Exit codes: 0
measured; 77 no CUDA device (one line says so); 2 bad arguments.

    python3 tests/bench/torch_pk_lookup_bench.py [--quick] [--reps 20]
"""

import argparse
import json
import sys

import torch
import torch.nn.functional as F

HEADS, KNN, K_DIM, GRAPH_LOOKUPS = 4, 32, 512, 16


def lookup(q, keys, table, n_keys):
    """out [B, v_dim] for queries q [B, heads * k_dim] (bf16)."""
    b = q.shape[0]
    qh = q.view(b, HEADS, 2, K_DIM // 2)
    s = torch.einsum("bhtd,htnd->bhtn", qh, keys)  # [B, heads, 2, n_keys]
    sv, si = s.topk(KNN, dim=-1)
    all_s = (sv[:, :, 0, :, None] + sv[:, :, 1, None, :]).view(b, HEADS, KNN * KNN)
    all_i = (si[:, :, 0, :, None] * n_keys + si[:, :, 1, None, :]).view(b, HEADS, KNN * KNN)
    best_s, best = all_s.topk(KNN, dim=-1)
    rows = all_i.gather(-1, best)
    w = torch.softmax(best_s.float(), dim=-1).to(table.dtype)
    return F.embedding_bag(rows.view(b, HEADS * KNN), table,
                           per_sample_weights=w.view(b, HEADS * KNN), mode="sum")


def median_us(fn, reps):
    for _ in range(min(3, reps)):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000.0)
    times.sort()
    return times[len(times) // 2]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n_keys 1024 only, tokens up to 512")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    if args.reps < 1:
        print("torch_pk_lookup_bench: --reps must be >= 1", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(json.dumps({"what": "skip", "reason": "no CUDA device (torch.cuda.is_available() "
                          "is False)"}))
        return 77
    dev = torch.device("cuda")
    batches = [1, 8, 64, 512] if args.quick else [1, 8, 64, 512, 4096]
    for n_keys in [1024] if args.quick else [1024, 4096]:
        g = torch.Generator(device=dev).manual_seed(n_keys)
        keys = torch.randn(HEADS, 2, n_keys, K_DIM // 2, device=dev, generator=g,
                           dtype=torch.bfloat16)
        queries = torch.randn(max(batches) + GRAPH_LOOKUPS, HEADS * K_DIM, device=dev,
                              generator=g, dtype=torch.bfloat16)
        for v_dim in [1024, 2048]:
            table = torch.empty(n_keys * n_keys, v_dim, dtype=torch.bfloat16, device=dev)
            table.uniform_(-1, 1, generator=g)
            for b in batches:
                reps = min(args.reps, 5) if b >= 512 else args.reps
                with torch.no_grad():
                    counter = [0]

                    def eager():
                        start = max(batches) + counter[0] % GRAPH_LOOKUPS if b == 1 else 0
                        counter[0] += 1
                        lookup(queries[start:start + b], keys, table, n_keys)

                    us = median_us(eager, reps)
                print(json.dumps({"what": "torch_lookup", "n_keys": n_keys, "v_dim": v_dim,
                                  "tokens": b, "us": round(us, 2)}))
                if b != 1:
                    continue
                with torch.no_grad():
                    stream = torch.cuda.Stream()
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream):
                        for i in range(2):  # warm-up outside the capture
                            lookup(queries[i:i + 1], keys, table, n_keys)
                    torch.cuda.current_stream().wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        for i in range(GRAPH_LOOKUPS):
                            row = max(batches) + i
                            lookup(queries[row:row + 1], keys, table, n_keys)
                    us = median_us(graph.replay, args.reps) / GRAPH_LOOKUPS
                print(json.dumps({"what": "torch_graph", "n_keys": n_keys, "v_dim": v_dim,
                                  "tokens": 1, "us_per_lookup": round(us, 2)}))
            table = None  # freed before the next table
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
