"""torch_pk_lookup_bench (the PyTorch twin of kernels/dev's lab), checked on the CPU: its lookup
is the memory layer's (docs/model.md steps 3-7: the top-knn rows of all n_keys^2 product keys by
brute force, softmax per head, the weighted sum over heads), and without a GPU it exits 77. And
gpu_report's issue-12 section reads the lab's and the twin's JSON lines into its tables and goals
(made-up inputs).

    /usr/bin/python3 tests/bench/torch_pk_lookup_bench_test.py
"""
import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.join(os.getcwd(), "tests", "bench"))
import gpu_report  # noqa: E402
import torch_pk_lookup_bench as bench  # noqa: E402


class TorchPkLookupTest(unittest.TestCase):
    def test_lookup_is_the_brute_force_memory_read(self):
        g = torch.Generator().manual_seed(3)
        n_keys, b, v_dim = 40, 3, 24
        heads, knn, half = bench.HEADS, bench.KNN, bench.K_DIM // 2
        q = torch.randn(b, heads * bench.K_DIM, generator=g, dtype=torch.float64)
        keys = torch.randn(heads, 2, n_keys, half, generator=g, dtype=torch.float64)
        table = torch.randn(n_keys * n_keys, v_dim, generator=g, dtype=torch.float64)
        got = bench.lookup(q, keys, table, n_keys)
        want = torch.zeros(b, v_dim, dtype=torch.float64)
        for t in range(b):
            for h in range(heads):
                s = [q[t, (2 * h + i) * half:(2 * h + i + 1) * half] @ keys[h, i].T
                     for i in range(2)]
                full = (s[0][:, None] + s[1][None, :]).reshape(-1)  # row a * n_keys + b
                top, rows = full.topk(knn)
                w = torch.softmax(top, dim=0)
                want[t] += (w[:, None] * table[rows]).sum(0)
        # The softmax runs in fp32 (as in the training code); a wrong row would be off by ~1e-2.
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    @unittest.skipIf(torch.cuda.is_available(), "a GPU is visible")
    def test_exits_77_without_a_gpu(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(bench.main([]), 77)
        self.assertIn('"what": "skip"', out.getvalue())

    def test_bad_reps(self):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            self.assertEqual(bench.main(["--reps", "0"]), 2)
        self.assertIn("--reps must be >= 1", err.getvalue())


class ReportTest(unittest.TestCase):
    def test_issue_12_section(self):
        lab = [{"what": "copy", "bytes": 1 << 30, "gb_per_s": 4000.0},
               {"what": "validate", "version": 2, "n_keys": 1024, "v_dim": 2048, "tokens": 8,
                "clear_ranks": 900, "clear_mismatches": 0, "near_tie_mismatches": 1,
                "nmse": 1e-12, "ok": True},
               {"what": "validate", "version": 1, "n_keys": 1024, "v_dim": 2048, "tokens": 8,
                "clear_ranks": 900, "clear_mismatches": 3, "near_tie_mismatches": 0,
                "nmse": 0.5, "ok": False}]
        for v, us in ((1, 90.0), (2, 7.5), (3, 20.0)):
            lab.append({"what": "lookup", "version": v, "n_keys": 1024, "v_dim": 2048,
                        "tokens": 1, "us": us + 5})
            lab.append({"what": "graph", "version": v, "n_keys": 1024, "v_dim": 2048,
                        "tokens": 1, "us_per_lookup": us})
            lab.append({"what": "lookup", "version": v, "n_keys": 1024, "v_dim": 2048,
                        "tokens": 512, "us": 100.0 * v})
        for t, frac in ((512, 0.93), (4096, 0.89)):
            lab.append({"what": "gather", "version": 2, "n_keys": 1024, "v_dim": 2048,
                        "tokens": t, "us": 1.0, "gb_per_s": 4000 * frac, "of_copy": frac})
        torch_lines = [{"what": "torch_graph", "n_keys": 1024, "v_dim": 2048, "tokens": 1,
                        "us_per_lookup": 60.0},
                       {"what": "torch_lookup", "n_keys": 1024, "v_dim": 2048, "tokens": 512,
                        "us": 500.0}]
        with tempfile.TemporaryDirectory() as d:
            for name, lines in (("pk_lab", lab), ("torch_pk_lookup", torch_lines),
                                ("decode_bench_cuda_legacy",
                                 [{"batch": 1, "median_decode_tok_s": 100.0}]),
                                ("decode_bench_cuda", [{"batch": 1, "median_decode_tok_s": 150.0},
                                                       {"batch": 64, "median_decode_tok_s": 9.0}])):
                with open(os.path.join(d, name + ".log"), "w") as f:
                    f.write("noise\n" + "".join(json.dumps(j) + "\n" for j in lines))
            r = gpu_report.pk_section(d)
        self.assertIn("Validation against the CPU reference: 1/2 ok; v1 n_keys 1024 v_dim 2048 "
                      "tokens 8: 3 clear mismatches", r)
        self.assertIn("| 1024 | 2048 | 1 (graph) | 90.00 | 7.50 | 20.00 | 60.00 | 8.0x |", r)
        self.assertIn("| 1024 | 2048 | 512 | 100.00 | 200.00 | 300.00 | 500.00 | 5.0x |", r)
        self.assertIn("| 1 | 100.0 | 150.0 | 1.50x |", r)
        self.assertIn("| 64 | - | 9.0 | - |", r)
        self.assertIn("- gather >= 90% of the d2d copy at 512 and 4096 tokens (1M x 2048): NOT met",
                      r)
        self.assertIn("- whole lookup <= 8 us at batch 1, graph replay (1M x 2048): met", r)
        self.assertIn("- >= 6x the PyTorch lookup at batch 1 (graphs, 1M x 2048): met", r)
        self.assertIn("- >= 6x the PyTorch lookup at batch 512 (eager, 1M x 2048): NOT met", r)


if __name__ == "__main__":
    unittest.main()
