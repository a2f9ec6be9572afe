"""The GPU benchmarks' Python side, checked on the CPU:
  - torch_decode_bench's model (the PyTorch baseline) computes memserve's function: its decode
    logits, batch 2, fp32 on the CPU, match tests/reference on a random model with every
    architecture option the baseline reads (GQA, memory+swilu, a gate, unshared tables);
  - tools/make_test_model.py --serving writes a checkpoint memserve loads (decode_bench runs it,
    --batch with a list) and --preset pkplus is the 373M shape of docs/model.md;
  - gpu_roofline counts, for that shape, exactly the bytes of the tensors a step reads;
  - decode_bench --device cuda without a CUDA backend/device is the factory's one-line error;
  - gpu_report computes the roofline fraction and the goals from a run's logs (made-up inputs).

    /usr/bin/python3 tests/bench/torch_decode_bench_test.py --decode_bench PATH
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import torch

ROOT = os.getcwd()
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import convert_lingua  # noqa: E402
import gpu_roofline  # noqa: E402
import make_test_model  # noqa: E402
import gpu_report  # noqa: E402
import torch_decode_bench  # noqa: E402
from reference_model import ReferenceModel  # noqa: E402

TMP = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp(prefix="torch_decode_bench_test_")
DECODE_BENCH = "tests/bench/decode_bench"


class BaselineMatchesReferenceTest(unittest.TestCase):
    def check(self, name, attention, **kwargs):
        ckpt, serve = os.path.join(TMP, name, "ckpt"), os.path.join(TMP, name, "serve")
        make_test_model.make_model(ckpt, **kwargs)
        convert_lingua.convert(ckpt, serve)
        ref = ReferenceModel.load(ckpt)
        cfg, tensors = torch_decode_bench.load_checkpoint(serve)
        model = torch_decode_bench.TorchDecodeModel(cfg, tensors, 2, 24, "cpu", torch.float32,
                                                    attention)
        g = torch.Generator().manual_seed(1)
        prompts = torch.randint(0, cfg["vocab_size"], (2, 12), generator=g)
        want = [ref.forward(prompts[b].tolist(), trace=False)[0] for b in range(2)]
        pos = torch.zeros(1, dtype=torch.long)
        with torch.no_grad():
            for t in range(prompts.shape[1]):
                got = model.step(prompts[:, t].contiguous(), pos)
                pos += 1
                for b in range(2):
                    err = (got[b] - want[b][t]).norm() / want[b][t].norm()
                    self.assertLess(float(err), 1e-4, (name, attention, t, b))

    def test_memory_plus_gqa(self):
        self.check("gqa", "manual", n_layers=3, n_kv_heads=2, mem_layers="1")

    def test_gated_unshared_tables(self):
        self.check("gated", "manual", n_layers=3, mem_layers="0,2", gated=True,
                   share_values=False)

    @unittest.skipUnless(hasattr(torch.nn.functional, "scaled_dot_product_attention"),
                         "this torch has no scaled_dot_product_attention (torch < 2.0)")
    def test_sdpa_attention(self):
        self.check("sdpa", "sdpa", n_layers=3, n_kv_heads=2, mem_layers="1")


class ServingModelTest(unittest.TestCase):
    def test_decode_bench_runs_a_serving_model(self):
        out = os.path.join(TMP, "serving")
        cfg = make_test_model.make_serving_model(
            out, dtype="bfloat16", device="cpu", dim=128, n_layers=3, n_heads=4, n_kv_heads=2,
            mem_layers="1", mem_n_keys=32, mem_knn=8, vocab=400)
        self.assertEqual(cfg["vocab_size"], 400)
        self.assertEqual(cfg["memory"]["layers"], [1])
        r = subprocess.run([DECODE_BENCH, "--model", out, "--batch", "1,3", "--decode_tokens",
                            "4", "--prompt_tokens", "3", "--runs", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        summary = [json.loads(line) for line in r.stdout.splitlines()
                   if "median_decode_tok_s" in line]
        self.assertEqual([(j["batch"], j["device"]) for j in summary], [(1, "cpu"), (3, "cpu")])

    def test_decode_bench_cuda_or_bad_flags_say_why(self):
        model = os.path.join(ROOT, "models", "demo")
        r = subprocess.run([DECODE_BENCH, "--model", model, "--device", "cuda", "--runs", "1",
                            "--decode_tokens", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode == 0:
            self.skipTest("this machine runs --device cuda")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"(?i)^error: .*cuda")
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        for flags, want in ((["--device", "tpu"], "--device must be cpu or cuda"),
                            (["--batch", "1,x"], "--batch: 'x' is not an integer >= 1")):
            r = subprocess.run([DECODE_BENCH, "--model", model] + flags,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.assertEqual(r.returncode, 1)
            self.assertIn(want, r.stderr)

    def test_pkplus_preset_and_its_roofline_bytes(self):
        a = dict(make_test_model.DEFAULTS)
        a.update(make_test_model.PRESETS["pkplus"])
        params = make_test_model.build_params(a, a["vocab"], None, TMP)
        cfg, _ = convert_lingua.model_config_from_params(params)
        self.assertEqual((cfg["dim"], cfg["n_layers"], cfg["n_heads"], cfg["ffn_hidden_dim"],
                          cfg["vocab_size"]), (1024, 24, 16, 2816, 32000))
        m = cfg["memory"]
        self.assertEqual((m["layers"], m["n_keys"], m["heads"], m["knn"], m["k_dim"],
                          m["v_dim"], m["share_values"]), ([4, 12, 20], 1024, 4, 32, 512, 1024,
                                                           True))
        # Weights a step reads = every planned tensor but the table and the embedding, bf16.
        mem_layers = [4, 12, 20]
        numel = 0
        for name, shape, kind, _, _ in make_test_model.tensor_plan(a, a["vocab"], mem_layers):
            if kind == "copy" or name in (make_test_model.SHARED_TABLE, "tok_embeddings.weight"):
                continue
            n = 1
            for d in shape:
                n *= d
            numel += n
        parts = gpu_roofline.decode_step_bytes(cfg, batch=1, context=47)
        weights = sum(v for k, v in parts.items() if k.endswith("_weights"))
        self.assertEqual(weights, 2 * numel)
        self.assertEqual(parts["value_rows"], 3 * 4 * 32 * 1024 * 2)
        self.assertEqual(parts["kv_cache"], 24 * 2 * 1024 * 48 * 2)
        self.assertEqual(parts["embedding_rows"], 1024 * 2)
        self.assertAlmostEqual(parts["total"] / 1e6, 673.6, delta=0.1)


class ReportTest(unittest.TestCase):
    def test_fraction_and_goals(self):
        d = os.path.join(TMP, "report")
        os.makedirs(d, exist_ok=True)
        a = dict(make_test_model.DEFAULTS)
        a.update(make_test_model.PRESETS["pkplus"])
        cfg, _ = convert_lingua.model_config_from_params(
            make_test_model.build_params(a, a["vocab"], None, TMP))
        with open(os.path.join(d, "pkplus_config.json"), "w") as f:
            json.dump(cfg, f)
        step = gpu_roofline.decode_step_bytes(cfg, 1, 16 + 32)["total"]
        roof = 4000e9 / step  # tokens/s at a made-up 4000 GB/s

        def lines(name, objs):
            with open(os.path.join(d, name), "w") as f:
                f.write("$ some command\n" + "".join(json.dumps(o) + "\n" for o in objs))
        lines("ceilings.log", [{"what": "copy_d2d", "mib": 1024, "ms": 0.5, "gb_per_s": 4000.0}])
        lines("torch_decode.log", [
            {"what": "decode", "mode": m, "batch": b, "tok_s": t}
            for m, b, t in (("graph", 1, 0.3 * roof), ("eager", 1, 0.1 * roof),
                            ("graph", 64, 1000.0), ("graph", 256, 2000.0))])
        lines("decode_bench_cuda.log", [
            {"batch": b, "median_decode_tok_s": t}
            for b, t in ((1, 0.6 * roof), (64, 1600.0), (256, 2900.0))])
        r = gpu_report.report(d)
        self.assertIn("memserve cuda: %s tokens/s = 60.0%% of the roofline" %
                      format(0.6 * roof, ",.1f"), r)
        self.assertIn("torch graph: %s tokens/s = 30.0%%" % format(0.3 * roof, ",.1f"), r)
        self.assertIn("batch 1 >= 50% of the roofline: met", r)
        self.assertIn("batch 1 above the torch CUDA-graph baseline: met", r)
        self.assertIn("batch 64 >= 1.5x the torch CUDA-graph baseline: met", r)
        self.assertIn("batch 256 >= 1.5x the torch CUDA-graph baseline: NOT met", r)
        self.assertIn("| 8 | - | - | - | - | - |", r)  # nothing made up where nothing ran


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--decode_bench" in args:
        i = args.index("--decode_bench")
        DECODE_BENCH = args[i + 1]
        del args[i:i + 2]
    unittest.main(argv=[sys.argv[0]] + args)
