"""torch_pk_lookup_bench (the PyTorch twin of kernels/dev's lab), checked on the CPU: its lookup
is the memory layer's (docs/model.md steps 3-7: the top-knn rows of all n_keys^2 product keys by
brute force, softmax per head, the weighted sum over heads), and without a GPU it exits 77.

    /usr/bin/python3 tests/bench/torch_pk_lookup_bench_test.py
"""
import contextlib
import io
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.join(os.getcwd(), "tests", "bench"))
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


if __name__ == "__main__":
    unittest.main()
