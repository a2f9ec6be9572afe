#!/usr/bin/python3
"""Writes a small random checkpoint in the TRAINING code's consolidated format.

The output directory mirrors what Meta Lingua / facebookresearch/memory writes after
`consolidate_checkpoints` (see docs/model.md, "Training checkpoints"):
    OUT_DIR/consolidated.pth   torch.save({"model": state_dict, "optim": {}})
    OUT_DIR/params.json        the whole training config; model under "model",
                               tokenizer under "data.tokenizer"
    OUT_DIR/tokenizer.model    only for --tokenizer sp (trained here with spm_train)

All tensors are fp32 except `*.values.weight` (bf16). With shared values every memory layer holds
an identical (separately stored) copy of the one table, as the training code saves it. With
peer=True the memory layers are PEER ones (`values_u`/`values_v` fp32 embeddings instead of
`values`, peer_variant=true in params.json): memserve refuses those, and the tests check it does.

Weights are random but scaled so activations stay O(1), logits are not degenerate, and product-key
sub-key scores are spread wide enough that top-k selections have clear gaps. Seeded: the same
arguments always give the same files.

    /usr/bin/python3 tools/make_test_model.py OUT_DIR [--dim 64] [--mem_layers 1] ...
Python: from make_test_model import make_model; make_model(out_dir, dim=64, mem_layers="1")

--serving writes memserve's serving checkpoint instead (config.json + model.safetensors, what
tools/convert_lingua.py makes of the training format), directly and fast, for GB-sized benchmark
models; --preset NAME takes a real configuration's shape (pkplus: the 373M model, 2 GiB table):
    python3 tools/make_test_model.py /tmp/pkplus --preset pkplus --serving --dtype bfloat16
(make_serving_model; on a GPU machine the random values are drawn on the GPU: seconds.)
"""

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_lingua  # noqa: E402
from convert_lingua import ffn_hidden_dim, sp_model_info_from_proto  # noqa: E402
from safetensors_io import SafetensorsWriter  # noqa: E402

BYTES_VOCAB = 258

DEFAULTS = dict(
    dim=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=None, multiple_of=32,
    ffn_dim_multiplier=None, vocab=None, max_seqlen=256, rope_theta=10000.0, norm_eps=1e-5,
    sliding_window=None, mem_layers="1", mem_n_keys=16, mem_heads=4, mem_knn=8, mem_k_dim=32,
    mem_v_dim=-1, share_values=True, swilu=True, gated=False, tokenizer="bytes", sp_vocab=512,
    seed=0, init_scale=1.0, key_scale=2.0, peer=False,
)


# --------------------------------------------------------------------------------------------
# SentencePiece tokenizer

_WORDS = (
    "the a an memory layer model token key value query head table product sparse dense "
    "attention server request batch cache lookup answer question river mountain city garden "
    "music coffee morning evening quickly slowly bright quiet ancient modern small large "
    "green blue red yellow run walk read write think learn build serve measure compare "
    "café naïve résumé jalapeño façade Zürich São Paulo München crème brûlée "
    "日本語 東京 こんにちは 世界 北京 中文 한국어 Привет мир Ελλάδα שלום مرحبا "
    "😀 🚀 🎉 ❤️ ✓ → ≤ ≥ € £ ¥ … — “quoted” ‘single’"
).split()
_PUNCT = [".", ".", ".", "!", "?", ",", ";", ":"]


def sp_training_text(seed, n_sentences=600):
    """A deterministic English-like corpus with some multi-byte UTF-8 (a few KB)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_sentences):
        n = rng.randint(4, 14)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randint(0, n), str(rng.randint(0, 99999)))
        s = " ".join(words)
        s = s[0].upper() + s[1:] + rng.choice(_PUNCT)
        if rng.random() < 0.1:
            s = "  " + s + "\t(" + str(i) + ")"
        lines.append(s)
    return "\n".join(lines) + "\n"


def train_sentencepiece(out_path, vocab_size, seed):
    """Trains a Llama-style BPE SentencePiece model (byte fallback, split digits, identity
    normalization) with spm_train; writes it to out_path. Deterministic."""
    spm = shutil.which("spm_train")
    if spm is None:
        raise RuntimeError("spm_train not found (Debian package sentencepiece)")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(sp_training_text(seed))
        # Relative paths (cwd=tmp): the model proto records them, and must not vary run to run.
        cmd = [
            spm, "--input=corpus.txt", "--model_prefix=sp", f"--vocab_size={vocab_size}",
            "--model_type=bpe", "--byte_fallback=true", "--split_digits=true",
            "--normalization_rule_name=identity", "--remove_extra_whitespaces=false",
            "--add_dummy_prefix=true", "--allow_whitespace_only_pieces=true",
            "--character_coverage=0.995", "--num_threads=1", "--minloglevel=2",
            "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1", "--random_seed=1",
            "--hard_vocab_limit=true",
        ]
        r = subprocess.run(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError("spm_train failed:\n" + r.stdout.decode("utf-8", "replace")[-2000:])
        shutil.copyfile(os.path.join(tmp, "sp.model"), out_path)


def sp_piece_count(model_path):
    """Number of pieces in a SentencePiece model."""
    return sp_model_info_from_proto(model_path)[0]


# --------------------------------------------------------------------------------------------
# Weights

# The shared value table's entry in tensor_plan (the training state dict holds only its per-layer
# copies).
SHARED_TABLE = "<shared values>"


def tensor_plan(a, vocab, mem_layers):
    """Every tensor of the training state dict for args `a`, in the order their random values are
    drawn: a list of (name, shape, kind, std, dtype). kind "normal" is N(0, std^2), "norm" is
    1 + N(0, 0.1^2) (a norm weight; not all ones, so a missing multiply by it is caught), "copy"
    is a copy of the SHARED_TABLE entry (no draw)."""
    s = float(a["init_scale"])
    dim, n_heads = a["dim"], a["n_heads"]
    head_dim = a["head_dim"] or dim // n_heads
    n_kv = a["n_kv_heads"] or n_heads
    hidden = ffn_hidden_dim(dim, a["multiple_of"], a["ffn_dim_multiplier"])
    f32, bf16 = torch.float32, torch.bfloat16
    plan = [("tok_embeddings.weight", (vocab, dim), "normal", 1.0, f32)]

    n_keys, heads, k_dim = a["mem_n_keys"], a["mem_heads"], a["mem_k_dim"]
    v_dim = a["mem_v_dim"] if a["mem_v_dim"] > 0 else dim
    v_proj = a["swilu"] or a["mem_v_dim"] > 0
    shared = bool(mem_layers) and a["share_values"]
    if shared:
        plan.append((SHARED_TABLE, (n_keys * n_keys, v_dim), "normal", 1.0, bf16))

    for i in range(a["n_layers"]):
        p = f"layers.{i}."
        plan += [
            (p + "attention.wq.weight", (n_heads * head_dim, dim), "normal", s / math.sqrt(dim), f32),
            (p + "attention.wk.weight", (n_kv * head_dim, dim), "normal", s / math.sqrt(dim), f32),
            (p + "attention.wv.weight", (n_kv * head_dim, dim), "normal", s / math.sqrt(dim), f32),
            (p + "attention.wo.weight", (dim, n_heads * head_dim), "normal",
             s / math.sqrt(n_heads * head_dim), f32),
        ]
        if i in mem_layers:
            f = p + "feed_forward."
            # Sub-key scores <q_half, key> have std ~key_scale: wide spread, clear top-k gaps.
            half = k_dim // 2
            plan += [
                (f + "keys", (2 * heads * n_keys, half), "normal",
                 a["key_scale"] / math.sqrt(half), f32),
                (f + "query_proj.query_mlps.0.weight", (heads * k_dim, dim), "normal",
                 1.0 / math.sqrt(dim), f32),
                (f + "query_proj.query_mlps.0.bias", (heads * k_dim,), "normal", 0.1, f32),
            ]
            if a["peer"]:  # PEER: two fp32 embeddings (training code's nn.Embedding)
                plan += [(f + "values_u.weight", (n_keys * n_keys, v_dim), "normal", 1.0, f32),
                         (f + "values_v.weight", (n_keys * n_keys, v_dim), "normal", 1.0, f32)]
            elif shared:
                plan.append((f + "values.weight", (n_keys * n_keys, v_dim), "copy", None, bf16))
            else:
                plan.append((f + "values.weight", (n_keys * n_keys, v_dim), "normal", 1.0, bf16))
            if v_proj:
                plan += [(f + "value_proj.weight", (dim, v_dim), "normal",
                          s / math.sqrt(v_dim * heads), f32),
                         (f + "value_proj.bias", (dim,), "normal", 0.1, f32)]
            if a["swilu"]:
                plan += [(f + "swilu_projection.weight", (v_dim, dim), "normal",
                          1.0 / math.sqrt(dim), f32),
                         (f + "swilu_projection.bias", (v_dim,), "normal", 0.1, f32)]
            if a["gated"]:
                plan += [(f + "gating.weight", (1, dim), "normal", 1.0 / math.sqrt(dim), f32),
                         (f + "gating.bias", (1,), "normal", 0.5, f32)]
        else:
            plan += [
                (p + "feed_forward.w1.weight", (hidden, dim), "normal", s / math.sqrt(dim), f32),
                (p + "feed_forward.w2.weight", (dim, hidden), "normal", s / math.sqrt(hidden), f32),
                (p + "feed_forward.w3.weight", (hidden, dim), "normal", s / math.sqrt(dim), f32),
            ]
        plan += [(p + "attention_norm.weight", (dim,), "norm", 0.1, f32),
                 (p + "ffn_norm.weight", (dim,), "norm", 0.1, f32)]
    plan.append(("norm.weight", (dim,), "norm", 0.1, f32))
    # Logit std ~2: argmax is rarely a near-tie.
    plan.append(("output.weight", (vocab, dim), "normal", 2.0 * s / math.sqrt(dim), f32))
    return plan


def _draw(g, shape, kind, std, dtype, device="cpu"):
    """One planned tensor's random values (on `device`, whose generator is `g`)."""
    t = torch.randn(*shape, generator=g, dtype=torch.float32, device=device) * std
    if kind == "norm":
        t = 1.0 + t
    return t.to(dtype)


def build_state_dict(a, vocab, mem_layers):
    """The training code's state dict for args `a` (a dict with DEFAULTS' keys)."""
    g = torch.Generator().manual_seed(int(a["seed"]))
    sd = {}
    shared = None
    for name, shape, kind, std, dtype in tensor_plan(a, vocab, mem_layers):
        if kind == "copy":
            sd[name] = shared.clone()
        elif name == SHARED_TABLE:
            shared = _draw(g, shape, kind, std, dtype)
        else:
            sd[name] = _draw(g, shape, kind, std, dtype)
    return sd


def build_params(a, vocab, tokenizer_path, out_dir):
    """A params.json like the training code's (OmegaConf dump of TrainArgs)."""
    pk_enabled = bool(a["mem_layers"].strip())
    model = {
        "dim": a["dim"],
        "n_layers": a["n_layers"],
        "head_dim": a["head_dim"],
        "n_heads": a["n_heads"],
        "n_kv_heads": a["n_kv_heads"],
        "ffn_dim_multiplier": a["ffn_dim_multiplier"],
        "multiple_of": a["multiple_of"],
        "norm_eps": a["norm_eps"],
        "rope_theta": a["rope_theta"],
        "init_base_std": None,
        "init_std_factor": "disabled",
        "max_seqlen": a["max_seqlen"],
        "productkey_args": {
            "is_enabled": pk_enabled,
            "layers": a["mem_layers"],
            "mem_n_keys": a["mem_n_keys"],
            "mem_heads": a["mem_heads"],
            "mem_knn": a["mem_knn"],
            "mem_share_values": a["share_values"],
            "mem_k_dim": a["mem_k_dim"],
            "mem_v_dim": a["mem_v_dim"],
            "swilu_projection": a["swilu"],
            "value_fixed_lr": 0.001,
            "mem_gated": a["gated"],
            "peer_variant": a["peer"],
        },
        "seed": 42,
        "vocab_size": vocab,
        "weight_tying": False,
        "sliding_window": a["sliding_window"],
    }
    return {
        "name": "memserve_test_model",
        "dump_dir": os.path.abspath(out_dir),
        "seed": a["seed"],
        "grad_acc_steps": 1,
        "gc_collect_freq": 1000,
        "probe_freq": None,
        "steps": 1000,
        "data": {
            "root_dir": None, "sources": {}, "batch_size": 2, "seq_len": a["max_seqlen"],
            "n_views": 2, "seed": 42, "add_bos": True, "add_eos": True, "load_async": True,
            "prefetch_size": 64,
            "tokenizer": {"name": a["tokenizer"], "path": tokenizer_path},
        },
        "optim": {"lr": 3e-4, "weight_decay": 0.1, "epsilon": 1e-8, "beta1": 0.9, "beta2": 0.95,
                  "clip": 1.0, "scheduler": "cosine", "warmup": 2000, "lr_min_ratio": 1e-6,
                  "cycle_length": 1.0, "cosine_theta": 1.0, "annealing_step": 1000,
                  "decay_fraction": 0.1, "exp_factor": 0.5},
        "model": model,
        "distributed": {"dp_shard": 1, "dp_replicate": 1, "tp_size": 1,
                        "memory_parallel_size": 1, "fsdp_type": "no_shard",
                        "model_dtype": "bf16", "compile": False},
        "checkpoint": {"dump": {"every": 1000, "keep": 1}, "eval": {"every": 1000, "keep": 1},
                       "path": None, "init_ckpt_path": None, "continue_training_from_init": False},
        "logging": {"freq": 10},
        "async_eval_gpus": None,
        "eval": None,
    }


def make_model(out_dir, **kwargs):
    """Creates the checkpoint directory; returns the params dict written to params.json.

    kwargs: any key of DEFAULTS (mem_layers="" gives a dense model; share_values, swilu and gated
    are bools; tokenizer is "bytes" or "sp").
    """
    unknown = set(kwargs) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown make_model arguments: {sorted(unknown)}")
    a = dict(DEFAULTS)
    a.update(kwargs)
    a["mem_layers"] = str(a["mem_layers"] or "")
    mem_layers = sorted({int(x) for x in a["mem_layers"].split(",") if x.strip()})
    for i in mem_layers:
        if not 0 <= i < a["n_layers"]:
            raise ValueError(f"memory layer {i} outside [0, {a['n_layers']})")
    if mem_layers:
        if a["mem_k_dim"] % 2:
            raise ValueError("mem_k_dim must be even")
        if a["mem_knn"] > a["mem_n_keys"]:
            raise ValueError("mem_knn must be <= mem_n_keys")
        if a["mem_heads"] < 2:
            raise ValueError("mem_heads must be >= 2 (as in the training code)")
    if a["dim"] % a["n_heads"] or a["n_heads"] % (a["n_kv_heads"] or a["n_heads"]):
        raise ValueError("dim % n_heads and n_heads % n_kv_heads must be 0")
    os.makedirs(out_dir, exist_ok=True)

    if a["tokenizer"] == "bytes":
        tok_vocab, tok_path = BYTES_VOCAB, None
    elif a["tokenizer"] == "sp":
        tok_path = os.path.abspath(os.path.join(out_dir, "tokenizer.model"))
        train_sentencepiece(tok_path, a["sp_vocab"], a["seed"])
        tok_vocab = sp_piece_count(tok_path)
    else:
        raise ValueError(f"tokenizer must be bytes or sp, not {a['tokenizer']!r}")
    vocab = a["vocab"] or tok_vocab
    if vocab < tok_vocab:
        raise ValueError(f"vocab {vocab} < tokenizer vocab {tok_vocab}")

    sd = build_state_dict(a, vocab, mem_layers)
    torch.save({"model": sd, "optim": {}}, os.path.join(out_dir, "consolidated.pth"))
    params = build_params(a, vocab, tok_path, out_dir)
    with open(os.path.join(out_dir, "params.json"), "w") as f:
        json.dump(params, f)
    return params


# Shapes of real configurations (docs/model.md, "Sizes"), for --preset. Random weights as always;
# flags given beside --preset override its values.
PRESETS = {
    # The 373M "pkplus" model: memory layers 4, 12, 20 sharing one 1M x 1024 bf16 table (2 GiB).
    "pkplus": dict(dim=1024, n_layers=24, n_heads=16, n_kv_heads=16, multiple_of=256,
                   mem_layers="4,12,20", mem_n_keys=1024, mem_heads=4, mem_knn=32, mem_k_dim=512,
                   vocab=32000, max_seqlen=1024, rope_theta=500000.0),
}

# Rows of a value table drawn at once by make_serving_model (bounds its scratch memory).
_TABLE_CHUNK_ROWS = 1 << 16


def _pick_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, not {device!r}")
    return device


def make_serving_model(out_dir, dtype="bfloat16", device="auto", files=1, **kwargs):
    """Writes memserve's SERVING checkpoint (config.json + model.safetensors, as
    tools/convert_lingua.py would write from make_model's output) directly, without the
    training-format detour, so that GB-sized models take seconds: random values are drawn on
    `device` ("auto": the GPU when torch sees one) and the shared value table is drawn and written
    once. Same shapes and value scales as make_model, but other random values (another
    generator; still seeded). `dtype` is the dense weights' ("float32" or "bfloat16"; the value
    table is always bf16). Bytes tokenizer only; PEER layers are refused (memserve refuses them).
    `files` > 1 splits the tensors over that many files (model-0000i-of-0000N.safetensors, tensor
    k of the write order in file k % files) listed in model.safetensors.index.json (HF's
    weight_map layout, docs/checkpoint-format.md), as large checkpoints ship.
    Returns the config dict written to config.json."""
    if int(files) < 1:
        raise ValueError(f"--files must be >= 1, not {files}")
    unknown = set(kwargs) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown make_serving_model arguments: {sorted(unknown)}")
    a = dict(DEFAULTS)
    a.update(kwargs)
    if a["tokenizer"] != "bytes":
        raise ValueError("--serving writes bytes-tokenizer models only")
    if a["peer"]:
        raise ValueError("--serving cannot write PEER layers (memserve refuses them)")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype must be float32 or bfloat16, not {dtype!r}")
    dense = torch.float32 if dtype == "float32" else torch.bfloat16
    device = _pick_device(device)
    a["mem_layers"] = str(a["mem_layers"] or "")
    mem_layers = sorted({int(x) for x in a["mem_layers"].split(",") if x.strip()})
    for i in mem_layers:
        if not 0 <= i < a["n_layers"]:
            raise ValueError(f"memory layer {i} outside [0, {a['n_layers']})")
    vocab = a["vocab"] or BYTES_VOCAB
    if vocab < BYTES_VOCAB:
        raise ValueError(f"vocab {vocab} < tokenizer vocab {BYTES_VOCAB}")
    params = build_params(a, vocab, None, out_dir)
    try:
        cfg, _ = convert_lingua.model_config_from_params(params)
    except convert_lingua.ConversionError as e:
        raise ValueError(str(e))
    tok_cfg, _, _ = convert_lingua.resolve_tokenizer(params, out_dir)

    # (file name, shape, kind, std, file dtype); F32 before BF16 keeps every offset aligned.
    plan = []
    for name, shape, kind, std, dt in tensor_plan(a, vocab, mem_layers):
        if kind == "copy":
            continue
        if name == SHARED_TABLE:
            name = convert_lingua.SHARED_VALUES_NAME
        plan.append((name, shape, kind, std, dt if dt == torch.bfloat16 else dense))
    plan.sort(key=lambda e: e[4] == torch.bfloat16)
    expected = convert_lingua.expected_shapes(cfg)
    if a["share_values"] and mem_layers:
        for i in mem_layers:
            del expected[f"layers.{i}.feed_forward.values.weight"]
        expected[convert_lingua.SHARED_VALUES_NAME] = [a["mem_n_keys"] ** 2,
                                                       cfg["memory"]["v_dim"]]
    got = {e[0]: list(e[1]) for e in plan}
    assert got == expected, f"plan does not match the config: {set(got) ^ set(expected)}"

    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator(device=device).manual_seed(int(a["seed"]))
    st = {torch.float32: "F32", torch.bfloat16: "BF16"}
    files = int(files)
    names = (["model.safetensors"] if files == 1 else
             [f"model-{i + 1:05d}-of-{files:05d}.safetensors" for i in range(files)])
    # Each file keeps the write order (F32 first), so its offsets stay aligned too.
    parts = [plan[i::files] for i in range(files)]
    writers = [SafetensorsWriter(os.path.join(out_dir, n), [(e[0], st[e[4]], e[1]) for e in part],
                                 {"format": "pt"}) for n, part in zip(names, parts)]
    weight_map = {}
    total = 0
    ok = False
    try:
        for k, (name, shape, kind, std, dt) in enumerate(plan):
            if shape[0] <= _TABLE_CHUNK_ROWS:
                t = _draw(g, shape, kind, std, dt, device).cpu()
            else:  # drawn in row chunks: no full-size fp32 scratch
                t = torch.empty(shape, dtype=dt)
                for r in range(0, shape[0], _TABLE_CHUNK_ROWS):
                    rows = min(_TABLE_CHUNK_ROWS, shape[0] - r)
                    t[r:r + rows] = _draw(g, (rows,) + tuple(shape[1:]), kind, std, dt,
                                          device).cpu()
            writers[k % files].write(name, t)
            weight_map[name] = names[k % files]
            total += t.numel() * t.element_size()
            del t
        ok = True
    finally:
        for w in writers:
            w.close() if ok else w.abort()
    if files > 1:
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1,
                      sort_keys=True)
            f.write("\n")
    config = convert_lingua.serving_config(
        cfg, tok_cfg, "plain",
        {"converter": "tools/make_test_model.py --serving", "converter_version": 1,
         "random_device": device, "seed": int(a["seed"]), "dense_dtype": dtype,
         "training_name": params["name"]})
    convert_lingua.write_config(out_dir, config)
    return config


def main(argv=None):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS))
    d = dict(DEFAULTS)
    d.update(PRESETS.get(pre.parse_known_args(argv)[0].preset, {}))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="a real configuration's shape (flags given too override it)")
    ap.add_argument("--serving", action="store_true",
                    help="write memserve's serving checkpoint directly (make_serving_model)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="--serving: dtype of the dense weights (the value table is bf16)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="--serving: where the random values are drawn (auto: the GPU if any)")
    ap.add_argument("--dim", type=int, default=d["dim"])
    ap.add_argument("--n_layers", type=int, default=d["n_layers"])
    ap.add_argument("--n_heads", type=int, default=d["n_heads"])
    ap.add_argument("--n_kv_heads", type=int, default=d["n_kv_heads"])
    ap.add_argument("--head_dim", type=int, default=None)
    ap.add_argument("--multiple_of", type=int, default=d["multiple_of"])
    ap.add_argument("--ffn_dim_multiplier", type=float, default=None)
    ap.add_argument("--vocab", type=int, default=d["vocab"],
                    help="vocab size (default: the tokenizer's; must be >= it)")
    ap.add_argument("--max_seqlen", type=int, default=d["max_seqlen"])
    ap.add_argument("--rope_theta", type=float, default=d["rope_theta"])
    ap.add_argument("--norm_eps", type=float, default=d["norm_eps"])
    ap.add_argument("--sliding_window", type=int, default=None)
    ap.add_argument("--mem_layers", default=d["mem_layers"],
                    help='comma-separated memory layer indices; "" = dense')
    ap.add_argument("--mem_n_keys", type=int, default=d["mem_n_keys"])
    ap.add_argument("--mem_heads", type=int, default=d["mem_heads"])
    ap.add_argument("--mem_knn", type=int, default=d["mem_knn"])
    ap.add_argument("--mem_k_dim", type=int, default=d["mem_k_dim"])
    ap.add_argument("--mem_v_dim", type=int, default=d["mem_v_dim"])
    ap.add_argument("--no_share_values", action="store_true")
    ap.add_argument("--no_swilu", action="store_true")
    ap.add_argument("--gated", action="store_true")
    ap.add_argument("--peer", action="store_true",
                    help="PEER memory layers (values_u/values_v), which memserve refuses")
    ap.add_argument("--tokenizer", choices=["bytes", "sp"], default=d["tokenizer"])
    ap.add_argument("--sp_vocab", type=int, default=d["sp_vocab"])
    ap.add_argument("--seed", type=int, default=d["seed"])
    ap.add_argument("--init_scale", type=float, default=d["init_scale"],
                    help="multiplies the std of attention, FFN, value_proj and output weights")
    ap.add_argument("--key_scale", type=float, default=d["key_scale"],
                    help="std of memory sub-key scores (larger = clearer top-k gaps)")
    ap.add_argument("--files", type=int, default=1,
                    help="with --serving: split the tensors over N safetensors files listed in "
                         "model.safetensors.index.json (default 1: model.safetensors)")
    x = ap.parse_args(argv)
    kw = {k: getattr(x, k) for k in DEFAULTS if hasattr(x, k)}
    kw.update(share_values=not x.no_share_values, swilu=not x.no_swilu, gated=x.gated)
    if not x.serving and (x.dtype != "float32" or x.device != "auto" or x.files != 1):
        print("make_test_model: error: --dtype, --device and --files go with --serving",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        if x.serving:
            make_serving_model(x.out_dir, dtype=x.dtype, device=x.device, files=x.files, **kw)
        else:
            make_model(x.out_dir, **kw)
    except (ValueError, RuntimeError) as e:
        print(f"make_test_model: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {x.out_dir} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
