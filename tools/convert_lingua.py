#!/usr/bin/python3
"""Converts a consolidated Meta Lingua / facebookresearch/memory checkpoint to memserve's format.

    /usr/bin/python3 tools/convert_lingua.py CKPT_DIR OUT_DIR [--dtype float32|bfloat16|int8]

CKPT_DIR holds consolidated.pth + params.json (what lingua's consolidate_checkpoints writes).
OUT_DIR receives config.json, model.safetensors and, for SentencePiece models, tokenizer.model.
The format is specified in docs/checkpoint-format.md.

Every tensor is checked against the shape the config implies; a shared value table is written once
(as "memory.values.weight") after checking that every layer's copy is bit-identical. Anything the
converter cannot represent faithfully is refused with a message on stderr and exit code 2.
"""

import argparse
import hashlib
import inspect
import json
import os
import pickle
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import SafetensorsWriter  # noqa: E402

CONVERTER_VERSION = 1
BYTES_VOCAB, BYTES_BOS, BYTES_EOS = 258, 256, 257
SHARED_VALUES_NAME = "memory.values.weight"

# Fields of the training code's model args (BaseTransformerArgs + LMTransformerArgs) and of
# ProductKeyArgs. Anything else in params.json "model" is refused: it might change the math.
MODEL_KEYS = {
    "dim", "n_layers", "head_dim", "n_heads", "n_kv_heads", "ffn_dim_multiplier", "multiple_of",
    "norm_eps", "rope_theta", "init_base_std", "init_std_factor", "max_seqlen", "productkey_args",
    "seed", "vocab_size", "weight_tying", "sliding_window",
}
PK_KEYS = {
    "is_enabled", "layers", "mem_n_keys", "mem_heads", "mem_knn", "mem_share_values", "mem_k_dim",
    "mem_v_dim", "swilu_projection", "value_fixed_lr", "mem_gated", "peer_variant",
}
# Defaults of the training code (docs/model.md, "Training configuration"), used for fields
# params.json leaves out.
MODEL_DEFAULTS = {
    "dim": 512, "n_layers": 8, "head_dim": None, "n_heads": None, "n_kv_heads": None,
    "ffn_dim_multiplier": None, "multiple_of": 256, "norm_eps": 1e-5, "rope_theta": 10000.0,
    "max_seqlen": 1024, "vocab_size": -1, "weight_tying": False, "sliding_window": None,
}
PK_DEFAULTS = {
    "is_enabled": False, "layers": "", "mem_n_keys": 1024, "mem_heads": 4, "mem_knn": 32,
    "mem_share_values": True, "mem_k_dim": 512, "mem_v_dim": -1, "swilu_projection": True,
    "mem_gated": False, "peer_variant": False,
}


class ConversionError(Exception):
    """A refusal: printed as one message, exit code 2."""


def warn(msg):
    print(f"convert_lingua: warning: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# params.json -> config

def _int(d, key, where):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConversionError(f"params.json: {where}{key} must be an integer, got {v!r}")
    return v


def _bool(d, key, where):
    v = d[key]
    if not isinstance(v, bool):
        raise ConversionError(f"params.json: {where}{key} must be a boolean, got {v!r}")
    return v


def _num(d, key, where):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConversionError(f"params.json: {where}{key} must be a number, got {v!r}")
    return float(v)


def ffn_hidden_dim(dim, multiple_of, ffn_dim_multiplier):
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def model_config_from_params(params):
    """Returns the architecture part of config.json (without tokenizer/source) from params.json.
    Refuses unsupported or unknown options."""
    if not isinstance(params, dict) or not isinstance(params.get("model"), dict):
        raise ConversionError("params.json: no \"model\" object")
    m = params["model"]
    unknown = sorted(set(m) - MODEL_KEYS)
    if unknown:
        raise ConversionError(f"params.json: unsupported model options {unknown} "
                              "(unknown to this converter; they may change the model)")
    pk_raw = m.get("productkey_args") or {}
    if not isinstance(pk_raw, dict):
        raise ConversionError("params.json: model.productkey_args must be an object")
    unknown = sorted(set(pk_raw) - PK_KEYS)
    if unknown:
        raise ConversionError(f"params.json: unsupported productkey_args options {unknown}")
    # null means "unset": keep the training default (which is itself null for optional fields).
    m = {**MODEL_DEFAULTS, **{k: v for k, v in m.items() if v is not None}}
    pk = {**PK_DEFAULTS, **{k: v for k, v in pk_raw.items() if v is not None}}

    dim = _int(m, "dim", "model.")
    n_layers = _int(m, "n_layers", "model.")
    if dim <= 0 or n_layers <= 0:
        raise ConversionError("params.json: model.dim and model.n_layers must be > 0")
    if m["n_heads"] is None and m["head_dim"] is None:
        raise ConversionError("params.json: model needs n_heads or head_dim")
    head_dim = _int(m, "head_dim", "model.") if m["head_dim"] is not None else None
    n_heads = _int(m, "n_heads", "model.") if m["n_heads"] is not None else dim // head_dim
    head_dim = head_dim or dim // n_heads
    n_kv_heads = _int(m, "n_kv_heads", "model.") if m["n_kv_heads"] is not None else n_heads
    if n_heads <= 0 or n_kv_heads <= 0 or n_heads % n_kv_heads or dim % n_heads:
        raise ConversionError(f"params.json: invalid heads: dim={dim} n_heads={n_heads} "
                              f"n_kv_heads={n_kv_heads} (need dim % n_heads == 0 and "
                              "n_heads % n_kv_heads == 0)")
    if head_dim <= 0 or head_dim % 2:
        raise ConversionError(f"params.json: head_dim {head_dim} must be even and > 0 (RoPE)")
    multiple_of = _int(m, "multiple_of", "model.")
    mult = m["ffn_dim_multiplier"]
    if mult is not None:
        mult = _num(m, "ffn_dim_multiplier", "model.")
    if m["sliding_window"] is not None:
        # The training code stores the field but its attention paths (sdpa, flex_attention)
        # never apply it: the model it trained attends to the whole causal prefix.
        warn(f"params.json: model.sliding_window={m['sliding_window']!r} dropped: the training "
             "code never applies it; the converted model uses full causal attention")
    cfg = {
        "dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
        "head_dim": head_dim,
        "ffn_hidden_dim": ffn_hidden_dim(dim, multiple_of, mult),
        "vocab_size": _int(m, "vocab_size", "model."),  # -1: fixed up from the tensors
        "max_seqlen": _int(m, "max_seqlen", "model."),
        "norm_eps": _num(m, "norm_eps", "model."),
        "rope_theta": _num(m, "rope_theta", "model."),
        "sliding_window": 0,  # see above; a window is an opt-in of config.json only
        "memory": None,
    }
    if cfg["max_seqlen"] <= 0:
        raise ConversionError("params.json: model.max_seqlen must be > 0")
    weight_tying = _bool(m, "weight_tying", "model.")

    where = "model.productkey_args."
    if _bool(pk, "is_enabled", where):
        if _bool(pk, "peer_variant", where):
            raise ConversionError(f"params.json: {where}peer_variant=true: PEER variant not "
                                  "supported (memserve serves product-key memories only)")
        layers_raw = pk["layers"]
        if isinstance(layers_raw, int) and not isinstance(layers_raw, bool):
            layers_raw = str(layers_raw)
        if not isinstance(layers_raw, str):
            raise ConversionError(f"params.json: {where}layers must be a string like \"4,12\"")
        try:  # exactly the training code's parse: "4, 12" and "4,,12" work, "4, ,12" does not
            listed = {int(s) for s in layers_raw.split(",") if len(s) > 0}
        except ValueError:
            raise ConversionError(f"params.json: {where}layers={layers_raw!r} is not a "
                                  "comma-separated list of integers")
        layers = sorted(i for i in listed if 0 <= i < n_layers)
        if len(layers) != len(listed):
            # The training code builds a memory only where `layer in pk_layers`; others are inert.
            warn(f"{where}layers lists {sorted(listed - set(layers))} outside [0, {n_layers}); "
                 "ignored as the training code does")
        if layers:
            n_keys = _int(pk, "mem_n_keys", where)
            heads = _int(pk, "mem_heads", where)
            knn = _int(pk, "mem_knn", where)
            k_dim = _int(pk, "mem_k_dim", where)
            mem_v_dim = _int(pk, "mem_v_dim", where)
            swilu = _bool(pk, "swilu_projection", where)
            check_memory_args(n_keys, heads, knn, k_dim, mem_v_dim, swilu)
            # mem_v_dim <= 0 means "the model width", as in the training code.
            cfg["memory"] = {
                "layers": layers, "n_keys": n_keys, "heads": heads, "knn": knn, "k_dim": k_dim,
                "v_dim": mem_v_dim if mem_v_dim > 0 else dim,
                "share_values": _bool(pk, "mem_share_values", where),
                "swilu_projection": swilu,
                "value_proj": swilu or mem_v_dim > 0,
                "gated": _bool(pk, "mem_gated", where),
            }
    return cfg, weight_tying


def check_memory_args(n_keys, heads, knn, k_dim, mem_v_dim, swilu):
    """Refuses the memory configurations the training code refuses (HashingMemory's asserts, and
    the ones its forward pass cannot run), naming the params.json field."""
    where = "params.json: model.productkey_args."
    if n_keys < 1:
        raise ConversionError(f"{where}mem_n_keys={n_keys} must be >= 1")
    if heads < 2:  # assert mem_heads >= 2
        raise ConversionError(f"{where}mem_heads={heads} must be >= 2 (the training code needs "
                              "at least two memory heads)")
    if not 1 <= knn <= n_keys:  # topk(knn) over n_keys sub-keys
        raise ConversionError(f"{where}mem_knn={knn} must be in [1, mem_n_keys={n_keys}]")
    if k_dim < 2 or k_dim % 2:  # assert mem_k_dim >= 2; assert mem_k_dim % 2 == 0
        raise ConversionError(f"{where}mem_k_dim={k_dim} must be even and >= 2 (two halves)")
    if mem_v_dim == 0 and swilu:  # Linear(dim, 0): the forward pass cannot run
        raise ConversionError(f"{where}mem_v_dim=0 with swilu_projection=true gives a 0-wide "
                              "projection the training code cannot run (use -1 for the model "
                              "width)")


def expected_shapes(cfg):
    """name -> shape of every tensor in the TRAINING checkpoint (per-layer value tables
    included)."""
    d, hd = cfg["dim"], cfg["head_dim"]
    v = cfg["vocab_size"]
    mem = cfg["memory"]
    mem_layers = set(mem["layers"]) if mem else set()
    s = {"tok_embeddings.weight": [v, d]}
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        s[p + "attention.wq.weight"] = [cfg["n_heads"] * hd, d]
        s[p + "attention.wk.weight"] = [cfg["n_kv_heads"] * hd, d]
        s[p + "attention.wv.weight"] = [cfg["n_kv_heads"] * hd, d]
        s[p + "attention.wo.weight"] = [d, cfg["n_heads"] * hd]
        s[p + "attention_norm.weight"] = [d]
        s[p + "ffn_norm.weight"] = [d]
        f = p + "feed_forward."
        if i in mem_layers:
            h, nk, kd, vd = mem["heads"], mem["n_keys"], mem["k_dim"], mem["v_dim"]
            s[f + "keys"] = [2 * h * nk, kd // 2]
            s[f + "query_proj.query_mlps.0.weight"] = [h * kd, d]
            s[f + "query_proj.query_mlps.0.bias"] = [h * kd]
            s[f + "values.weight"] = [nk * nk, vd]
            if mem["swilu_projection"]:
                s[f + "swilu_projection.weight"] = [vd, d]
                s[f + "swilu_projection.bias"] = [vd]
            if mem["value_proj"]:
                s[f + "value_proj.weight"] = [d, vd]
                s[f + "value_proj.bias"] = [d]
            if mem["gated"]:
                s[f + "gating.weight"] = [1, d]
                s[f + "gating.bias"] = [1]
        else:
            hidden = cfg["ffn_hidden_dim"]
            s[f + "w1.weight"] = [hidden, d]
            s[f + "w2.weight"] = [d, hidden]
            s[f + "w3.weight"] = [hidden, d]
    s["norm.weight"] = [d]
    s["output.weight"] = [v, d]
    return s


# --------------------------------------------------------------------------------------------
# Tokenizer

def _read_varint(buf, pos):
    v, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, pos


def _proto_fields(buf):
    """Yields (field_number, wire_type, value) of one protobuf message; value is an int for
    varint/fixed types and bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _read_varint(buf, pos)
        elif wt == 1:
            val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 5:
            val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        elif wt == 2:
            n, pos = _read_varint(buf, pos)
            val, pos = bytes(buf[pos:pos + n]), pos + n
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if pos > len(buf):
            raise ValueError("truncated message")
        yield field, wt, val


SP_CONTROL = 3


def sp_model_info_from_proto(path):
    """(vocab_size, bos_id, eos_id) of a SentencePiece model by parsing its ModelProto directly:
    pieces are field 1 (SentencePiece{piece=1, score=2, type=3}); TrainerSpec is field 2 with
    bos_piece=46 / eos_piece=47 (defaults "<s>", "</s>"). Like SentencePieceProcessor, an id is
    the piece's index, and -1 unless that piece is a CONTROL piece."""
    with open(path, "rb") as f:
        buf = f.read()
    pieces = []
    bos_piece, eos_piece = "<s>", "</s>"
    for field, wt, val in _proto_fields(buf):
        if field == 1 and wt == 2:
            piece, ptype = None, 1
            for f2, wt2, v2 in _proto_fields(val):
                if f2 == 1 and wt2 == 2:
                    piece = v2.decode("utf-8")
                elif f2 == 3 and wt2 == 0:
                    ptype = v2
            pieces.append((piece, ptype))
        elif field == 2 and wt == 2:
            for f2, wt2, v2 in _proto_fields(val):
                if f2 == 46 and wt2 == 2:
                    bos_piece = v2.decode("utf-8")
                elif f2 == 47 and wt2 == 2:
                    eos_piece = v2.decode("utf-8")

    def control_id(name):
        for i, (p, t) in enumerate(pieces):
            if p == name:
                return i if t == SP_CONTROL else -1
        return -1

    if not pieces:
        raise ValueError("no pieces")
    return len(pieces), control_id(bos_piece), control_id(eos_piece)


def sp_model_info(path):
    try:
        import sentencepiece as spm  # Debian: python3-sentencepiece
    except ImportError:
        spm = None
    try:
        if spm is not None:
            sp = spm.SentencePieceProcessor(model_file=path)
            return sp.vocab_size(), sp.bos_id(), sp.eos_id()
        return sp_model_info_from_proto(path)
    except Exception as e:  # corrupt file: a refusal, not a traceback
        raise ConversionError(f"tokenizer file {path} is not a valid SentencePiece model: {e}")


def resolve_tokenizer(params, ckpt_dir):
    """Returns (tokenizer config dict, source file path or None, tokenizer vocab size)."""
    data = params.get("data") or {}
    tok = data.get("tokenizer") if isinstance(data, dict) else None
    if not isinstance(tok, dict):
        warn("params.json has no data.tokenizer; assuming the training default \"bytes\"")
        tok = {"name": "bytes"}
    name = tok.get("name", "bytes")
    if name == "bytes":
        return {"kind": "bytes", "file": "", "bos_id": BYTES_BOS, "eos_id": BYTES_EOS}, None, \
            BYTES_VOCAB
    if name == "tiktoken":
        raise ConversionError("params.json: tokenizer \"tiktoken\" is not supported yet "
                              "(supported: bytes, sp)")
    if name != "sp":
        raise ConversionError(f"params.json: unknown tokenizer name {name!r} "
                              "(supported: bytes, sp)")
    path = tok.get("path")
    # The recorded path is where the model lived at training time; also look beside the checkpoint.
    candidates = []
    if isinstance(path, str) and path:
        candidates += [path, os.path.join(ckpt_dir, path),
                       os.path.join(ckpt_dir, os.path.basename(path))]
    candidates.append(os.path.join(ckpt_dir, "tokenizer.model"))
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise ConversionError(f"SentencePiece tokenizer file not found: data.tokenizer.path="
                              f"{path!r}; also looked for {candidates[1:]}")
    vocab, bos, eos = sp_model_info(found)
    return {"kind": "sp", "file": "tokenizer.model", "bos_id": bos, "eos_id": eos}, found, vocab


# --------------------------------------------------------------------------------------------
# Checkpoint

def load_state_dict(path, allow_pickle):
    kwargs = {"map_location": "cpu"}
    if not allow_pickle:
        kwargs["weights_only"] = True
    if "mmap" in inspect.signature(torch.load).parameters:
        kwargs["mmap"] = True  # torch >= 2.1: GB-sized value tables stay on disk until written
    try:
        ckpt = torch.load(path, **kwargs)
    except FileNotFoundError:
        raise ConversionError(f"missing file {path}")
    except Exception as e:
        hint = ""
        if isinstance(e, pickle.UnpicklingError) and not allow_pickle:
            hint = (" (the safe loader refused a non-tensor Python object; if you trust the "
                    "file, rerun with --allow_pickle)")
        raise ConversionError(f"cannot load {path}: {type(e).__name__}: {e}{hint}")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ConversionError(f"{path}: expected a dict with a \"model\" state dict")
    sd = ckpt["model"]
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path}: non-tensor entries in \"model\": {bad[:10]}")
    return sd


def _names(names, limit=20):
    """A list of tensor names for a message, shortened when long."""
    names = list(names)
    if len(names) <= limit:
        return str(names)
    return f"{names[:limit]} and {len(names) - limit} more"


def _bits_equal(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    view = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
    if a.dtype in view:
        return torch.equal(a.view(view[a.dtype]), b.view(view[b.dtype]))
    return torch.equal(a, b)


def refuse_peer(sd):
    """A PEER memory (Parameter Efficient Expert Retrieval) stores its experts as `values_u` and
    `values_v` embeddings instead of `values`; it also carries value_proj and swilu_projection, so
    only `values_u` tells it apart. Refused whatever params.json says."""
    peer = sorted(n for n in sd if "values_u" in n.split("."))
    if peer:
        raise ConversionError(f"PEER variant not supported: the checkpoint holds PEER memory "
                              f"tensors {_names(peer, 4)} (memserve serves product-key memories "
                              "only)")


def plan_tensors(sd, cfg, weight_tying, dtype):
    """Checks the state dict against cfg; returns a list of (out_name, source_name, out_dtype)
    in file order (F32 first, then BF16, then I8, so every offset is aligned to its element
    size). dtype torch.int8: int8_eligible weights become I8 plus their INT8_SCALES, the rest
    bfloat16."""
    if cfg["vocab_size"] <= 0:
        emb = sd.get("tok_embeddings.weight")
        if emb is None or emb.dim() != 2:
            raise ConversionError("missing tensors: ['tok_embeddings.weight']")
        cfg["vocab_size"] = int(emb.shape[0])
    tie_output = False
    if "output.weight" not in sd and weight_tying:
        tie_output = True
        warn("output.weight absent and weight_tying=true: writing output.weight as a copy of "
             "tok_embeddings.weight")
    exp = expected_shapes(cfg)
    mem = cfg["memory"]
    value_names = [f"layers.{i}.feed_forward.values.weight" for i in (mem["layers"] if mem else [])]
    present = set(sd) | ({"output.weight"} if tie_output else set())
    missing = [n for n in exp if n not in present]
    unexpected = sorted(n for n in sd if n not in exp)
    problems = []
    if mem and mem["share_values"]:
        # Some exporters may keep only one copy of a shared table; that's fine.
        have = [n for n in value_names if n in sd]
        if have:
            missing = [n for n in missing if n not in value_names]
            if len(have) < len(value_names):
                warn(f"shared value table present in {have} only")
    if missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_names(unexpected)}")
    for n, shape in exp.items():
        src = "tok_embeddings.weight" if (n == "output.weight" and tie_output) else n
        if src in sd and list(sd[src].shape) != shape:
            problems.append(f"shape mismatch: {n}: expected {shape}, got {list(sd[src].shape)}")
    for n in exp:
        if n in sd and not sd[n].is_floating_point():
            problems.append(f"{n}: dtype {sd[n].dtype} is not floating point")
    if problems:
        raise ConversionError("checkpoint does not match params.json:\n  " + "\n  ".join(problems))

    for n in value_names:
        if n in sd and sd[n].dtype != torch.bfloat16:
            warn(f"{n} is {sd[n].dtype}, not bfloat16 as the training code saves it; rounding "
                 "it to bfloat16")

    plan = []
    for n in exp:
        if n in value_names:
            continue
        src = "tok_embeddings.weight" if (n == "output.weight" and tie_output) else n
        if dtype != torch.int8:
            plan.append((n, src, dtype))
        elif int8_eligible(n, exp[n]):
            plan += [(n, src, torch.int8), (n + INT8_SCALE_SUFFIX, src, INT8_SCALES)]
        else:
            plan.append((n, src, torch.bfloat16))
    if mem and mem["share_values"]:
        have = [n for n in value_names if n in sd]
        ref = sd[have[0]]
        differ = [n for n in have[1:] if not _bits_equal(sd[n], ref)]
        if differ:
            raise ConversionError(
                f"mem_share_values=true but the value tables of {differ} differ from "
                f"{have[0]}; a shared table must be identical in every memory layer")
        plan.append((SHARED_VALUES_NAME, have[0], torch.bfloat16))
    else:
        plan += [(n, n, torch.bfloat16) for n in value_names]
    order = {torch.float32: 0, INT8_SCALES: 0, torch.bfloat16: 1, torch.int8: 2}
    plan.sort(key=lambda p: order[p[2]])  # stable: F32 first, then BF16, then I8
    return plan


# Int8 weights (--dtype int8, docs/checkpoint-format.md): blocks of INT8_BLOCK columns share
# an F32 scale, written as "<name>_scale" [rows, in / INT8_BLOCK].
INT8_BLOCK = 32
INT8_SCALE_SUFFIX = "_scale"
# The matmul weights (those the engine multiplies activations by); the rest stays bfloat16.
_MATMUL_SUFFIXES = ("output.weight", "attention.wq.weight", "attention.wk.weight",
                    "attention.wv.weight", "attention.wo.weight", "feed_forward.w1.weight",
                    "feed_forward.w2.weight", "feed_forward.w3.weight",
                    "query_proj.query_mlps.0.weight", "swilu_projection.weight",
                    "value_proj.weight")


def int8_eligible(name, shape):
    """Whether --dtype int8 quantizes this tensor: a matmul weight with a multiple of INT8_BLOCK
    columns and at least 16 rows (smaller ones, e.g. the memory gate, stay bfloat16)."""
    return (name.endswith(_MATMUL_SUFFIXES) and len(shape) == 2 and shape[1] % INT8_BLOCK == 0
            and shape[0] >= 16)


def quantize_int8(t):
    """(int8 values, float32 scales) of a 2-D tensor: per block of INT8_BLOCK columns, scale =
    max|w| / 127 and q = round(w / scale) in [-127, 127] (an all-zero block: scale 0, q 0).
    The engine multiplies by float(q) * scale."""
    w = t.to(torch.float32)
    rows, cols = w.shape
    blocks = w.reshape(rows, cols // INT8_BLOCK, INT8_BLOCK)
    scale = blocks.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(blocks / safe.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return q.reshape(rows, cols), scale.contiguous()


# plan_tensors' out_dtype for the scales of an int8 weight (written as F32).
INT8_SCALES = "int8_scales"


def write_model(path, sd, plan):
    st = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int8: "I8", INT8_SCALES: "F32"}
    specs = []
    for out, src, dt in plan:
        shape = list(sd[src].shape)
        if dt == INT8_SCALES:
            shape = [shape[0], shape[1] // INT8_BLOCK]
        specs.append((out, st[dt], shape))
    with SafetensorsWriter(path, specs, {"format": "pt"}) as w:
        for out, src, dt in plan:
            if dt == torch.int8:
                w.write(out, quantize_int8(sd[src])[0])
            elif dt == INT8_SCALES:
                w.write(out, quantize_int8(sd[src])[1])  # recomputed: the same scales
            else:
                t = sd[src]
                if t.dtype != dt:
                    t = t.to(dt)  # only this tensor is copied
                w.write(out, t)


def serving_config(cfg, tok_cfg, chat_template, source):
    """config.json's content (docs/checkpoint-format.md) from model_config_from_params' cfg (its
    vocab_size resolved), the tokenizer entry and the provenance `source`."""
    return {
        "format": "memserve-llama-pk",
        "format_version": 1,
        **{k: cfg[k] for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                               "ffn_hidden_dim", "vocab_size", "max_seqlen", "norm_eps",
                               "rope_theta", "sliding_window", "memory")},
        "tokenizer": tok_cfg,
        "chat_template": chat_template,
        "source": source,
    }


def write_config(out_dir, config):
    """Writes OUT_DIR/config.json atomically (a crash never leaves half a file)."""
    tmp = os.path.join(out_dir, "config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "config.json"))


def convert(ckpt_dir, out_dir, dtype="float32", allow_pickle=False, chat_template="plain"):
    """Converts; raises ConversionError on refusal. Returns the config dict written."""
    tdtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}
    if dtype not in tdtypes:
        raise ConversionError(f"--dtype must be float32, bfloat16 or int8, not {dtype!r}")
    tdtype = tdtypes[dtype]
    if not os.path.isdir(ckpt_dir):
        raise ConversionError(f"checkpoint directory {ckpt_dir} does not exist")
    params_path = os.path.join(ckpt_dir, "params.json")
    ckpt_path = os.path.join(ckpt_dir, "consolidated.pth")
    for p in (params_path, ckpt_path):
        if not os.path.isfile(p):
            raise ConversionError(f"missing file {p}")
    with open(params_path, "rb") as f:
        params_bytes = f.read()
    try:
        params = json.loads(params_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{params_path} is not valid JSON: {e}")

    index = os.path.join(out_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        raise ConversionError(f"{index} exists; the loader refuses a directory holding both it "
                              "and model.safetensors: remove it or choose another OUT_DIR")

    cfg, weight_tying = model_config_from_params(params)
    tok_cfg, tok_src, tok_vocab = resolve_tokenizer(params, ckpt_dir)

    sd = load_state_dict(ckpt_path, allow_pickle)
    refuse_peer(sd)
    plan = plan_tensors(sd, cfg, weight_tying, tdtype)
    if cfg["vocab_size"] < tok_vocab:
        raise ConversionError(f"vocab_size {cfg['vocab_size']} is smaller than the tokenizer's "
                              f"{tok_vocab}")
    if cfg["vocab_size"] > tok_vocab:
        warn(f"vocab_size {cfg['vocab_size']} > tokenizer vocab {tok_vocab}; ids >= "
             f"{tok_vocab} are never produced by the tokenizer")
    for name in ("bos_id", "eos_id"):
        if not 0 <= tok_cfg[name] < cfg["vocab_size"]:
            warn(f"tokenizer {name}={tok_cfg[name]} is not a valid token id")

    config = serving_config(cfg, tok_cfg, chat_template, {
        "converter": "tools/convert_lingua.py",
        "converter_version": CONVERTER_VERSION,
        "checkpoint_dir": os.path.abspath(ckpt_dir),
        "params_sha256": hashlib.sha256(params_bytes).hexdigest(),
        "dense_dtype": dtype,
        "training_name": str(params.get("name", "")),
    })
    os.makedirs(out_dir, exist_ok=True)
    write_model(os.path.join(out_dir, "model.safetensors"), sd, plan)
    if tok_src is not None:
        dst = os.path.join(out_dir, "tokenizer.model")
        if os.path.abspath(tok_src) != os.path.abspath(dst):
            shutil.copyfile(tok_src, dst)
    write_config(out_dir, config)
    return config


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Convert a consolidated Lingua/memory checkpoint to memserve's format.")
    ap.add_argument("ckpt_dir", help="directory with consolidated.pth and params.json")
    ap.add_argument("out_dir", help="serving checkpoint directory to write")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "int8"],
                    help="dtype of all tensors except the value tables (always bfloat16); int8: "
                         "matmul weights as int8 with an F32 scale per 32-column block (as "
                         "llama.cpp's Q8_0), the rest bfloat16")
    ap.add_argument("--allow_pickle", action="store_true",
                    help="load consolidated.pth with the full (code-executing) unpickler")
    ap.add_argument("--chat_template", default="plain",
                    choices=["plain", "llama2", "llama3", "raw"],
                    help="how Chat renders messages (docs/checkpoint-format.md); raw for a "
                         "base model that never saw a chat format")
    a = ap.parse_args(argv)
    try:
        cfg = convert(a.ckpt_dir, a.out_dir, a.dtype, a.allow_pickle, a.chat_template)
    except ConversionError as e:
        print(f"convert_lingua: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"convert_lingua: error: {e}", file=sys.stderr)
        return 2
    mem = cfg["memory"]
    print(f"convert_lingua: wrote {a.out_dir} (layers={cfg['n_layers']} dim={cfg['dim']} "
          f"vocab={cfg['vocab_size']} memory_layers={mem['layers'] if mem else []})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
