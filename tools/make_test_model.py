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

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_lingua import ffn_hidden_dim, sp_model_info_from_proto  # noqa: E402

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

def _normal(g, shape, std):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * std


def _norm_weight(g, dim):
    # Not all ones, so a missing multiply by the norm weight is caught.
    return 1.0 + _normal(g, (dim,), 0.1)


def build_state_dict(a, vocab, mem_layers):
    """The training code's state dict for args `a` (a dict with DEFAULTS' keys)."""
    g = torch.Generator().manual_seed(int(a["seed"]))
    s = float(a["init_scale"])
    dim, n_heads = a["dim"], a["n_heads"]
    head_dim = a["head_dim"] or dim // n_heads
    n_kv = a["n_kv_heads"] or n_heads
    hidden = ffn_hidden_dim(dim, a["multiple_of"], a["ffn_dim_multiplier"])
    sd = {}
    sd["tok_embeddings.weight"] = _normal(g, (vocab, dim), 1.0)

    n_keys, heads, k_dim = a["mem_n_keys"], a["mem_heads"], a["mem_k_dim"]
    v_dim = a["mem_v_dim"] if a["mem_v_dim"] > 0 else dim
    v_proj = a["swilu"] or a["mem_v_dim"] > 0
    shared_table = None
    if mem_layers and a["share_values"]:
        shared_table = _normal(g, (n_keys * n_keys, v_dim), 1.0).to(torch.bfloat16)

    for i in range(a["n_layers"]):
        p = f"layers.{i}."
        sd[p + "attention.wq.weight"] = _normal(g, (n_heads * head_dim, dim), s / math.sqrt(dim))
        sd[p + "attention.wk.weight"] = _normal(g, (n_kv * head_dim, dim), s / math.sqrt(dim))
        sd[p + "attention.wv.weight"] = _normal(g, (n_kv * head_dim, dim), s / math.sqrt(dim))
        sd[p + "attention.wo.weight"] = _normal(g, (dim, n_heads * head_dim),
                                                s / math.sqrt(n_heads * head_dim))
        if i in mem_layers:
            f = p + "feed_forward."
            # Sub-key scores <q_half, key> have std ~key_scale: wide spread, clear top-k gaps.
            half = k_dim // 2
            sd[f + "keys"] = _normal(g, (2 * heads * n_keys, half),
                                     a["key_scale"] / math.sqrt(half))
            sd[f + "query_proj.query_mlps.0.weight"] = _normal(g, (heads * k_dim, dim),
                                                               1.0 / math.sqrt(dim))
            sd[f + "query_proj.query_mlps.0.bias"] = _normal(g, (heads * k_dim,), 0.1)
            if a["peer"]:  # PEER: two fp32 embeddings (training code's nn.Embedding)
                sd[f + "values_u.weight"] = _normal(g, (n_keys * n_keys, v_dim), 1.0)
                sd[f + "values_v.weight"] = _normal(g, (n_keys * n_keys, v_dim), 1.0)
            elif shared_table is not None:
                sd[f + "values.weight"] = shared_table.clone()
            else:
                sd[f + "values.weight"] = _normal(g, (n_keys * n_keys, v_dim),
                                                  1.0).to(torch.bfloat16)
            if v_proj:
                sd[f + "value_proj.weight"] = _normal(g, (dim, v_dim),
                                                      s / math.sqrt(v_dim * heads))
                sd[f + "value_proj.bias"] = _normal(g, (dim,), 0.1)
            if a["swilu"]:
                sd[f + "swilu_projection.weight"] = _normal(g, (v_dim, dim), 1.0 / math.sqrt(dim))
                sd[f + "swilu_projection.bias"] = _normal(g, (v_dim,), 0.1)
            if a["gated"]:
                sd[f + "gating.weight"] = _normal(g, (1, dim), 1.0 / math.sqrt(dim))
                sd[f + "gating.bias"] = _normal(g, (1,), 0.5)
        else:
            sd[p + "feed_forward.w1.weight"] = _normal(g, (hidden, dim), s / math.sqrt(dim))
            sd[p + "feed_forward.w2.weight"] = _normal(g, (dim, hidden), s / math.sqrt(hidden))
            sd[p + "feed_forward.w3.weight"] = _normal(g, (hidden, dim), s / math.sqrt(dim))
        sd[p + "attention_norm.weight"] = _norm_weight(g, dim)
        sd[p + "ffn_norm.weight"] = _norm_weight(g, dim)
    sd["norm.weight"] = _norm_weight(g, dim)
    # Logit std ~2: argmax is rarely a near-tie.
    sd["output.weight"] = _normal(g, (vocab, dim), 2.0 * s / math.sqrt(dim))
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    d = DEFAULTS
    ap.add_argument("--dim", type=int, default=d["dim"])
    ap.add_argument("--n_layers", type=int, default=d["n_layers"])
    ap.add_argument("--n_heads", type=int, default=d["n_heads"])
    ap.add_argument("--n_kv_heads", type=int, default=d["n_kv_heads"])
    ap.add_argument("--head_dim", type=int, default=None)
    ap.add_argument("--multiple_of", type=int, default=d["multiple_of"])
    ap.add_argument("--ffn_dim_multiplier", type=float, default=None)
    ap.add_argument("--vocab", type=int, default=None,
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
    x = ap.parse_args(argv)
    kw = {k: getattr(x, k) for k in DEFAULTS if hasattr(x, k)}
    kw.update(share_values=not x.no_share_values, swilu=not x.no_swilu, gated=x.gated)
    try:
        make_model(x.out_dir, **kw)
    except (ValueError, RuntimeError) as e:
        print(f"make_test_model: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {x.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
