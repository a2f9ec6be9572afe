#!/usr/bin/python3
"""Tests of tools/convert_lingua.py, tools/make_test_model.py, tools/safetensors_io.py and the
fp32 reference in tests/reference/reference_model.py.

    /usr/bin/python3 tests/tools/converter_test.py        (from the repo root; exits non-zero on
                                                            failure)
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import convert_lingua  # noqa: E402
import make_test_model  # noqa: E402
import safetensors_io  # noqa: E402
from reference_model import ReferenceModel, apply_rope, rope_cos_sin  # noqa: E402

try:
    import sentencepiece
except ImportError:  # Debian: python3-sentencepiece
    sentencepiece = None

CONFIG_KEYS = ["format", "format_version", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
               "ffn_hidden_dim", "vocab_size", "max_seqlen", "norm_eps", "rope_theta",
               "sliding_window", "memory", "tokenizer", "chat_template", "source"]
MEMORY_KEYS = ["layers", "n_keys", "heads", "knn", "k_dim", "v_dim", "share_values",
               "swilu_projection", "value_proj", "gated"]


def run_converter(ckpt, out, *extra):
    """Runs convert_lingua.main in-process; returns (exit code, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = convert_lingua.main([ckpt, out, *extra])
    return rc, err.getvalue()


def load_training_sd(ckpt):
    return torch.load(os.path.join(ckpt, "consolidated.pth"), map_location="cpu")["model"]


class TempDirTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix=cls.__name__, dir=os.environ.get("TEST_TMPDIR"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)


class SafetensorsIoTest(TempDirTest):
    def test_roundtrip_alignment_and_strict_reader(self):
        p = self.path("t.safetensors")
        a = torch.randn(3, 5)
        b = torch.randn(7).to(torch.bfloat16)
        safetensors_io.write_safetensors(p, [("a", a), ("b", b)], {"format": "pt"})
        f = safetensors_io.SafetensorsFile(p)
        self.assertEqual(f.data_start % 64, 0)
        self.assertEqual(f.metadata, {"format": "pt"})
        self.assertTrue(torch.equal(f.tensor("a"), a))
        self.assertTrue(torch.equal(f.tensor("b").view(torch.int16), b.view(torch.int16)))
        # Misordered (BF16 then F32 at an odd offset) is refused by the writer.
        with self.assertRaises(safetensors_io.SafetensorsError):
            safetensors_io.write_safetensors(self.path("bad.safetensors"),
                                             [("b", b), ("a", a)])
        # Truncated file is refused by the reader.
        with open(p, "rb") as fh:
            data = fh.read()
        with open(self.path("trunc.safetensors"), "wb") as fh:
            fh.write(data[:-2])
        with self.assertRaises(safetensors_io.SafetensorsError):
            safetensors_io.SafetensorsFile(self.path("trunc.safetensors"))


class ConverterRoundTripTest(TempDirTest):
    def convert_and_check(self, name, dtype="float32", **kw):
        ckpt, out = self.path(name), self.path(name + "_serving")
        make_test_model.make_model(ckpt, **kw)
        extra = ["--dtype", dtype] if dtype != "float32" else []
        rc, err = run_converter(ckpt, out, *extra)
        self.assertEqual(rc, 0, err)
        self.check(ckpt, out, dtype, kw)
        return ckpt, out

    def check(self, ckpt, out, dtype, kw):
        a = dict(make_test_model.DEFAULTS)
        a.update(kw)
        src = load_training_sd(ckpt)
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        st = safetensors_io.SafetensorsFile(os.path.join(out, "model.safetensors"))

        # --- config.json
        self.assertEqual(list(cfg), CONFIG_KEYS)
        dim, n_heads = a["dim"], a["n_heads"]
        head_dim = a["head_dim"] or dim // n_heads
        mem_layers = sorted({int(x) for x in str(a["mem_layers"] or "").split(",") if x.strip()})
        expect = {
            "format": "memserve-llama-pk", "format_version": 1, "dim": dim,
            "n_layers": a["n_layers"], "n_heads": n_heads,
            "n_kv_heads": a["n_kv_heads"] or n_heads, "head_dim": head_dim,
            "ffn_hidden_dim": make_test_model.ffn_hidden_dim(dim, a["multiple_of"],
                                                             a["ffn_dim_multiplier"]),
            "vocab_size": src["tok_embeddings.weight"].shape[0],
            "max_seqlen": a["max_seqlen"], "norm_eps": a["norm_eps"],
            "rope_theta": a["rope_theta"],
            "sliding_window": 0,  # the training code never applies params.json's window
            "chat_template": "plain",
        }
        for k, v in expect.items():
            self.assertEqual(cfg[k], v, k)
        if not mem_layers:
            self.assertIsNone(cfg["memory"])
        else:
            mem = cfg["memory"]
            self.assertEqual(list(mem), MEMORY_KEYS)
            self.assertEqual(mem, {
                "layers": mem_layers, "n_keys": a["mem_n_keys"], "heads": a["mem_heads"],
                "knn": a["mem_knn"], "k_dim": a["mem_k_dim"],
                "v_dim": a["mem_v_dim"] if a["mem_v_dim"] > 0 else dim,
                "share_values": a["share_values"], "swilu_projection": a["swilu"],
                "value_proj": a["swilu"] or a["mem_v_dim"] > 0, "gated": a["gated"]})
        if a["tokenizer"] == "bytes":
            self.assertEqual(cfg["tokenizer"], {"kind": "bytes", "file": "", "bos_id": 256,
                                                "eos_id": 257})
            self.assertEqual(cfg["vocab_size"], 258)
        else:
            self.assertEqual(cfg["tokenizer"], {"kind": "sp", "file": "tokenizer.model",
                                                "bos_id": 1, "eos_id": 2})
            with open(os.path.join(ckpt, "tokenizer.model"), "rb") as f1, \
                    open(os.path.join(out, "tokenizer.model"), "rb") as f2:
                self.assertEqual(f1.read(), f2.read())

        # --- safetensors layout
        self.assertEqual(st.data_start % 64, 0)
        self.assertEqual(st.metadata, {"format": "pt"})
        dtypes = [st.header[n]["dtype"] for n in st.order]
        self.assertEqual(dtypes, sorted(dtypes, key=lambda d: d == "BF16"), "F32 before BF16")
        for n in st.order:
            e = st.header[n]
            esize = safetensors_io.DTYPES[e["dtype"]][0]
            self.assertEqual(e["data_offsets"][0] % esize, 0, n)

        # --- every tensor equals its source
        value_names = [f"layers.{i}.feed_forward.values.weight" for i in mem_layers]
        expected_names = set(src) - set(value_names)
        if mem_layers and a["share_values"]:
            expected_names.add("memory.values.weight")
            self.assertFalse([n for n in st.header if n.endswith(".values.weight")
                              and n != "memory.values.weight"], "shared table stored once")
        else:
            expected_names |= set(value_names)
        self.assertEqual(set(st.header), expected_names)
        for n in st.order:
            got = st.tensor(n)
            s = src[value_names[0] if n == "memory.values.weight" else n]
            if n.endswith("values.weight"):
                self.assertEqual(got.dtype, torch.bfloat16, n)
                self.assertTrue(torch.equal(got.view(torch.int16), s.view(torch.int16)), n)
            elif dtype == "bfloat16":
                self.assertEqual(got.dtype, torch.bfloat16, n)
                self.assertTrue(torch.equal(got.view(torch.int16),
                                            s.to(torch.bfloat16).view(torch.int16)), n)
            else:
                self.assertEqual(got.dtype, torch.float32, n)
                self.assertTrue(torch.equal(got, s), n)
        # The keys keep the training layout [2*heads*n_keys, k_dim/2].
        for i in mem_layers:
            self.assertEqual(st.header[f"layers.{i}.feed_forward.keys"]["shape"],
                             [2 * a["mem_heads"] * a["mem_n_keys"], a["mem_k_dim"] // 2])

    def test_dense(self):
        self.convert_and_check("dense", mem_layers="", n_layers=2)

    def test_gqa_ffn_multiplier_head_dim(self):
        self.convert_and_check("gqa", dim=64, n_heads=4, n_kv_heads=2, head_dim=8,
                               ffn_dim_multiplier=1.3, multiple_of=48, mem_layers="1",
                               rope_theta=500000.0, sliding_window=16)

    def test_gated_vdim(self):
        self.convert_and_check("gated_vdim", gated=True, mem_v_dim=48)

    def test_sliding_window_dropped_with_one_warning(self):
        ckpt, out = self.path("sw"), self.path("sw_serving")
        make_test_model.make_model(ckpt, sliding_window=16)
        rc, err = run_converter(ckpt, out)
        self.assertEqual(rc, 0, err)
        lines = [ln for ln in err.splitlines() if "sliding_window" in ln]
        self.assertEqual(len(lines), 1, err)
        self.assertIn("warning", lines[0])
        self.assertIn("params.json", lines[0])
        self.assertIn("sliding_window=16", lines[0])
        with open(os.path.join(out, "config.json")) as f:
            self.assertEqual(json.load(f)["sliding_window"], 0)

    def test_nonpositive_mem_v_dim_means_dim(self):
        # HashingMemory reads any mem_v_dim <= 0 as "the model width" (0 only without swilu).
        self.convert_and_check("vdim_m2", mem_v_dim=-2)
        self.convert_and_check("vdim_0", mem_v_dim=0, swilu=False)

    def test_no_swilu(self):
        self.convert_and_check("noswilu", swilu=False)                  # no projection at all
        self.convert_and_check("noswilu_vdim", swilu=False, mem_v_dim=32)  # value_proj only

    def test_two_layers_shared_bf16(self):
        _, out = self.convert_and_check("shared2", "bfloat16", n_layers=3, mem_layers="2,0")
        st = safetensors_io.SafetensorsFile(os.path.join(out, "model.safetensors"))
        self.assertEqual({st.header[n]["dtype"] for n in st.header}, {"BF16"})

    def test_unshared(self):
        self.convert_and_check("unshared", n_layers=3, mem_layers="0,1", share_values=False)

    def test_sentencepiece(self):
        ckpt, out = self.convert_and_check("sp", tokenizer="sp")
        vocab, bos, eos = convert_lingua.sp_model_info_from_proto(
            os.path.join(out, "tokenizer.model"))
        self.assertEqual((bos, eos), (1, 2))
        if sentencepiece is not None:
            sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(out,
                                                                              "tokenizer.model"))
            self.assertEqual((vocab, bos, eos), (sp.vocab_size(), sp.bos_id(), sp.eos_id()))
            text = "Hello café naïve 日本語 😀 12345 zqx ø"
            self.assertEqual(sp.decode(sp.encode(text)), text)
            # rare characters use byte-fallback pieces
            self.assertIn("<0xC3>", [sp.id_to_piece(i) for i in sp.encode("ø")])

    def test_weight_tying(self):
        ckpt, out = self.path("tied"), self.path("tied_serving")
        make_test_model.make_model(ckpt, mem_layers="")
        ck = torch.load(os.path.join(ckpt, "consolidated.pth"))
        del ck["model"]["output.weight"]
        torch.save(ck, os.path.join(ckpt, "consolidated.pth"))
        with open(os.path.join(ckpt, "params.json")) as f:
            params = json.load(f)
        params["model"]["weight_tying"] = True
        with open(os.path.join(ckpt, "params.json"), "w") as f:
            json.dump(params, f)
        rc, err = run_converter(ckpt, out)
        self.assertEqual(rc, 0, err)
        self.assertIn("weight_tying", err)
        st = safetensors_io.SafetensorsFile(os.path.join(out, "model.safetensors"))
        self.assertTrue(torch.equal(st.tensor("output.weight"), st.tensor("tok_embeddings.weight")))

    def test_deterministic(self):
        make_test_model.make_model(self.path("det1"), mem_layers="1", seed=3)
        make_test_model.make_model(self.path("det2"), mem_layers="1", seed=3)
        a, b = load_training_sd(self.path("det1")), load_training_sd(self.path("det2"))
        self.assertEqual(set(a), set(b))
        for n in a:
            self.assertTrue(torch.equal(a[n].float(), b[n].float()), n)


class Int8ConversionTest(TempDirTest):
    """--dtype int8: matmul weights as I8 + F32 block scales (within half a step of the source),
    the rest bfloat16, file order F32, BF16, I8."""

    def test_int8(self):
        ckpt, out = self.path("i8"), self.path("i8_serving")
        make_test_model.make_model(ckpt, dim=64, n_layers=2, mem_layers="1", gated=True)
        rc, err = run_converter(ckpt, out, "--dtype", "int8")
        self.assertEqual(rc, 0, err)
        src = load_training_sd(ckpt)
        st = safetensors_io.SafetensorsFile(os.path.join(out, "model.safetensors"))
        dtypes = [st.header[n]["dtype"] for n in st.order]
        rank = {"F32": 0, "BF16": 1, "I8": 2}
        self.assertEqual(dtypes, sorted(dtypes, key=rank.get), "F32, then BF16, then I8")
        quantized = []
        for n in st.order:
            if n.endswith(convert_lingua.INT8_SCALE_SUFFIX):
                continue
            got = st.tensor(n)
            s = src["layers.1.feed_forward.values.weight" if n == "memory.values.weight" else n]
            if st.header[n]["dtype"] != "I8":
                self.assertEqual(got.dtype, torch.bfloat16, n)
                self.assertTrue(torch.equal(got.view(torch.int16),
                                            s.to(torch.bfloat16).view(torch.int16)), n)
                continue
            quantized.append(n)
            scales = st.tensor(n + convert_lingua.INT8_SCALE_SUFFIX)
            rows, cols = s.shape
            self.assertEqual(list(scales.shape), [rows, cols // 32], n)
            self.assertEqual(scales.dtype, torch.float32, n)
            self.assertLessEqual(int(got.abs().max()), 127, n)
            w = s.float().reshape(rows, cols // 32, 32)
            deq = got.float().reshape(rows, cols // 32, 32) * scales.unsqueeze(-1)
            err = (deq - w).abs()
            self.assertTrue(bool((err <= scales.unsqueeze(-1) * 0.5 + 1e-7).all()), n)
            self.assertTrue(torch.allclose(scales, w.abs().amax(-1) / 127.0), n)
        # Every matmul weight, and nothing else: norms, embeddings, keys, biases, the value
        # table and the 1-row memory gate stay bfloat16.
        self.assertEqual(sorted(quantized), sorted(
            n for n in src if convert_lingua.int8_eligible(n, list(src[n].shape))))
        self.assertIn("output.weight", quantized)
        self.assertIn("layers.1.feed_forward.query_proj.query_mlps.0.weight", quantized)
        self.assertEqual(st.header["layers.1.feed_forward.gating.weight"]["dtype"], "BF16")
        with open(os.path.join(out, "config.json")) as f:
            self.assertEqual(json.load(f)["source"]["dense_dtype"], "int8")

    def test_all_zero_block(self):
        q, scale = convert_lingua.quantize_int8(torch.zeros(2, 64))
        self.assertEqual(int(q.abs().sum()), 0)
        self.assertEqual(float(scale.abs().sum()), 0.0)


class ConverterRefusalTest(TempDirTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.base = os.path.join(cls.tmp, "base")
        make_test_model.make_model(cls.base, n_layers=3, mem_layers="0,2")

    def variant(self, name, params_fn=None, sd_fn=None):
        d = self.path(name)
        shutil.copytree(self.base, d)
        if params_fn:
            with open(os.path.join(d, "params.json")) as f:
                p = json.load(f)
            params_fn(p)
            with open(os.path.join(d, "params.json"), "w") as f:
                json.dump(p, f)
        if sd_fn:
            ck = torch.load(os.path.join(d, "consolidated.pth"))
            sd_fn(ck["model"])
            torch.save(ck, os.path.join(d, "consolidated.pth"))
        return d

    def assertRefused(self, ckpt, *needles):
        out = self.path(os.path.basename(ckpt) + "_out")
        rc, err = run_converter(ckpt, out)
        self.assertEqual(rc, 2, err)
        self.assertNotIn("Traceback", err)
        for n in needles:
            self.assertIn(n, err)
        self.assertFalse(os.path.exists(os.path.join(out, "config.json")))
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))
        return err

    def test_peer_variant(self):
        d = self.variant("peer", lambda p: p["model"]["productkey_args"].update(peer_variant=True))
        self.assertRefused(d, "peer_variant", "PEER variant not supported")

    def test_peer_detected_by_values_u(self):
        # A PEER checkpoint also has value_proj and swilu_projection; values_u gives it away,
        # whatever params.json's peer_variant says.
        d = self.path("peer_tensors")
        make_test_model.make_model(d, n_layers=3, mem_layers="0,2", peer=True)
        sd = load_training_sd(d)
        self.assertIn("layers.0.feed_forward.value_proj.weight", sd)
        self.assertIn("layers.0.feed_forward.swilu_projection.weight", sd)
        self.assertRefused(d, "peer_variant=true", "PEER variant not supported")
        with open(os.path.join(d, "params.json")) as f:
            p = json.load(f)
        p["model"]["productkey_args"]["peer_variant"] = False
        with open(os.path.join(d, "params.json"), "w") as f:
            json.dump(p, f)
        err = self.assertRefused(d, "PEER variant not supported",
                                 "layers.0.feed_forward.values_u.weight")
        self.assertNotIn("missing tensors", err)

    def test_memory_args_the_training_code_refuses(self):
        # HashingMemory's asserts (mem_heads >= 2, mem_k_dim even and >= 2), topk(mem_knn) over
        # mem_n_keys sub-keys, and a 0-wide swilu projection; each names its field.
        pk = "productkey_args."
        for name, change, needle in [
                ("one_head", dict(mem_heads=1), pk + "mem_heads=1 must be >= 2"),
                ("knn", dict(mem_knn=17), pk + "mem_knn=17 must be in [1, mem_n_keys=16]"),
                ("knn0", dict(mem_knn=0), pk + "mem_knn=0"),
                ("nkeys", dict(mem_n_keys=0, mem_knn=0), pk + "mem_n_keys=0 must be >= 1"),
                ("kdim_odd", dict(mem_k_dim=33), pk + "mem_k_dim=33 must be even"),
                ("vdim0", dict(mem_v_dim=0), pk + "mem_v_dim=0 with swilu_projection=true"),
                ("layers_blank", dict(layers="0, ,2"), pk + "layers='0, ,2'")]:
            with self.subTest(name):
                d = self.variant("mem_" + name,
                                 lambda p: p["model"]["productkey_args"].update(change))
                self.assertRefused(d, "params.json: model." + needle)

    def test_tiktoken(self):
        d = self.variant("tiktoken", lambda p: p["data"]["tokenizer"].update(name="tiktoken",
                                                                             path="x.tiktoken"))
        self.assertRefused(d, "tiktoken")

    def test_unknown_tokenizer(self):
        d = self.variant("unk_tok", lambda p: p["data"]["tokenizer"].update(name="wordpiece"))
        self.assertRefused(d, "wordpiece")

    def test_missing_sp_file(self):
        d = self.variant("sp_missing", lambda p: p["data"]["tokenizer"].update(
            name="sp", path="/nonexistent/llama.model"))
        self.assertRefused(d, "/nonexistent/llama.model")

    def test_unknown_model_option(self):
        d = self.variant("unk_opt", lambda p: p["model"].update(n_future_head=2))
        self.assertRefused(d, "n_future_head")

    def test_missing_tensor(self):
        d = self.variant("missing", sd_fn=lambda sd: sd.pop("layers.1.feed_forward.w3.weight"))
        self.assertRefused(d, "missing tensors", "layers.1.feed_forward.w3.weight")

    def test_unexpected_tensor(self):
        d = self.variant("unexpected",
                         sd_fn=lambda sd: sd.update({"layers.0.feed_forward.w1.weight":
                                                     torch.zeros(3)}))
        self.assertRefused(d, "unexpected tensors", "layers.0.feed_forward.w1.weight")

    def test_shape_mismatch(self):
        d = self.variant("shape", sd_fn=lambda sd: sd.update(
            {"layers.1.attention.wq.weight": torch.zeros(64, 32)}))
        self.assertRefused(d, "shape mismatch", "layers.1.attention.wq.weight", "[64, 64]",
                           "[64, 32]")

    def test_keys_shape_mismatch(self):
        d = self.variant("keys", sd_fn=lambda sd: sd.update(
            {"layers.0.feed_forward.keys": torch.zeros(4 * 16, 32)}))
        self.assertRefused(d, "layers.0.feed_forward.keys", "[128, 16]", "[64, 32]")

    def test_shared_copies_differ(self):
        def poke(sd):
            v = sd["layers.2.feed_forward.values.weight"]
            v[5, 3] = v[5, 3] + 1
        d = self.variant("differ", sd_fn=poke)
        self.assertRefused(d, "layers.2.feed_forward.values.weight", "differ")

    def test_missing_params(self):
        d = self.variant("noparams")
        os.unlink(os.path.join(d, "params.json"))
        self.assertRefused(d, "params.json")

    def test_missing_checkpoint(self):
        d = self.variant("nopth")
        os.unlink(os.path.join(d, "consolidated.pth"))
        self.assertRefused(d, "consolidated.pth")

    def test_stale_index_in_out_dir(self):
        out = self.path("stale_out")
        os.makedirs(out)
        open(os.path.join(out, "model.safetensors.index.json"), "w").close()
        rc, err = run_converter(self.base, out)
        self.assertEqual(rc, 2, err)
        self.assertIn("model.safetensors.index.json", err)

    def test_cli_exit_code_and_no_traceback(self):
        d = self.variant("cli_peer",
                         lambda p: p["model"]["productkey_args"].update(peer_variant=True))
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_lingua.py"), d,
                            self.path("cli_out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 2, err)
        self.assertIn("peer_variant", err)
        self.assertNotIn("Traceback", err)


class ReferenceModelTest(TempDirTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ckpt = os.path.join(cls.tmp, "ref")
        make_test_model.make_model(cls.ckpt, n_layers=3, mem_layers="0,2", gated=True,
                                   mem_n_keys=16, mem_knn=8, n_kv_heads=2)
        cls.m = ReferenceModel.load(cls.ckpt)
        cls.tokens = cls.m.encode("The memory layer reads a café menu: naïve 日本語 😀!")

    def test_product_keys_equal_brute_force(self):
        m = self.m
        _, trace = m.forward(self.tokens)
        self.assertEqual([t["layer"] for t in trace], [0, 2])
        T, clear = len(self.tokens), 0
        for t in trace:
            self.assertEqual(tuple(t["indices"].shape), (T, m.mem_heads, m.mem_knn))
            self.assertTrue(bool((t["scores"][..., :-1] >= t["scores"][..., 1:]).all()))
            # Recompute all n_keys^2 row scores by brute force from the weights.
            p = f"layers.{t['layer']}.feed_forward."
            x = self._ffn_input(t["layer"])
            q = (x @ m.w[p + "query_proj.query_mlps.0.weight"].T +
                 m.w[p + "query_proj.query_mlps.0.bias"]).view(T, m.mem_heads, m.mem_k_dim)
            half = m.mem_k_dim // 2
            keys = m.w[p + "keys"].view(m.mem_heads, 2, m.mem_n_keys, half)
            rows = torch.arange(m.mem_n_keys ** 2)
            full_keys = torch.cat([keys[:, 0, rows // m.mem_n_keys],
                                   keys[:, 1, rows % m.mem_n_keys]], -1)  # [H, rows, k_dim]
            full = torch.einsum("thd,hrd->thr", q, full_keys)
            bf = full.topk(m.mem_knn + 1, -1)
            gap = bf.values[..., m.mem_knn - 1] - bf.values[..., m.mem_knn]
            torch.testing.assert_close(gap, t["candidate_gap"], atol=1e-4, rtol=0)
            ok = gap > 1e-4
            clear += int(ok.sum())
            got = t["indices"].sort(-1).values
            want = bf.indices[..., :m.mem_knn].sort(-1).values
            self.assertTrue(bool((got == want).all(-1)[ok].all()))
            torch.testing.assert_close(t["scores"], bf.values[..., :m.mem_knn], atol=1e-4,
                                       rtol=1e-5)
        self.assertGreater(clear, 0.9 * 2 * T * m.mem_heads, "most selections unambiguous")

    def _ffn_input(self, layer):
        """ffn_norm output of `layer` for self.tokens, recomputed via the public pieces."""
        captured = {}
        orig = self.m._memory

        def spy(i, x, want_trace):
            captured.setdefault(i, x)
            return orig(i, x, want_trace)
        self.m._memory = spy
        try:
            self.m.forward(self.tokens, trace=False)
        finally:
            del self.m._memory
        return captured[layer]

    def test_cache_matches_full_forward(self):
        logits, _ = self.m.forward(self.tokens, trace=False)
        self.assertGreater(float(logits.std()), 0.5)   # not degenerate
        state = self.m.new_cache()
        cuts = [0, 1, 6, 7, len(self.tokens)]
        for a, b in zip(cuts, cuts[1:]):
            last = self.m.step(state, self.tokens[a:b])
            torch.testing.assert_close(last, logits[b - 1], atol=1e-4, rtol=1e-4)

    def test_greedy_matches_recompute(self):
        prompt = self.tokens[:5]
        got = self.m.greedy(prompt, 6)
        seq = list(prompt)
        for _ in range(6):
            logits, _ = self.m.forward(seq, trace=False)
            seq.append(int(logits[-1].argmax()))
        self.assertEqual(got, seq[5:])

    def test_rope_interleaved(self):
        x = torch.zeros(1, 1, 4)
        x[0, 0, 0] = 1.0                       # pair (x0, x1) = (1, 0)
        cos, sin = rope_cos_sin(torch.tensor([3]), 4, 10000.0)
        y = apply_rope(x, cos, sin)
        torch.testing.assert_close(y[0, 0, :2], torch.tensor([torch.cos(torch.tensor(3.0)),
                                                              torch.sin(torch.tensor(3.0))]))
        self.assertEqual(float(y[0, 0, 2:].abs().sum()), 0.0)

    def test_sliding_window(self):
        ckpt = self.path("sw")
        make_test_model.make_model(ckpt, mem_layers="1", sliding_window=4)
        # params.json's window is ignored, as the training code ignores it ...
        full = ReferenceModel.load(ckpt)
        self.assertIsNone(full.sliding_window)
        # ... and applies only when set explicitly (the engine's config.json opt-in).
        m = ReferenceModel.load(ckpt)
        m.sliding_window = 4
        toks = list(range(10, 20))
        a, _ = m.forward(toks, trace=False)
        b, _ = full.forward(toks, trace=False)
        torch.testing.assert_close(a[:4], b[:4])
        self.assertGreater(float((a[4:] - b[4:]).abs().max()), 1e-3)
        state = m.new_cache()
        for j, t in enumerate(toks):
            last = m.step(state, [t])
        torch.testing.assert_close(last, a[-1], atol=1e-4, rtol=1e-4)

    def test_bytes_tokenizer(self):
        text = "café 日本語 😀"
        ids = self.m.encode(text)
        self.assertEqual(ids[0], 256)
        self.assertEqual(ids[1:], list(text.encode("utf-8")))
        self.assertEqual(self.m.decode(ids + [257]), text)

    @unittest.skipIf(sentencepiece is None, "python3-sentencepiece not installed")
    def test_sp_tokenizer(self):
        ckpt = self.path("sp")
        make_test_model.make_model(ckpt, tokenizer="sp", mem_layers="1")
        m = ReferenceModel.load(ckpt)
        text = "Hello café naïve 日本語 😀"
        ids = m.encode(text)
        self.assertEqual(ids[0], 1)
        self.assertEqual(m.decode(ids), text)
        logits, _ = m.forward(ids, trace=False)
        self.assertEqual(tuple(logits.shape), (len(ids), m.vocab_size))

    def test_refuses_past_max_seqlen(self):
        with self.assertRaises(ValueError):
            self.m.forward([1] * (self.m.max_seqlen + 1), trace=False)


if __name__ == "__main__":
    unittest.main()
