"""Bytes one decode step must move through device memory, for a memserve config.json: the
memory-bandwidth roofline of batch-1 decode (docs/gpu.md, "Benchmarks").

At batch 1 a decode step is memory-bound: every dense weight is read once (bf16 on the GPU), plus
the value-table rows the memory layers gather, the K/V cache over the context, and one embedding
row. The roofline step time is those bytes over the measured copy bandwidth (cuda_ceilings'
copy_d2d, which counts bytes read plus written, the HBM's total rate); the fraction of the roofline
a benchmark reaches is (its tokens/s) / (bandwidth / bytes per step).

    import gpu_roofline
    b = gpu_roofline.decode_step_bytes(config, batch=1, context=48)   # dict of parts, "total"
    frac = gpu_roofline.roofline_fraction(tok_s, b["total"], copy_gb_per_s)

Python 3 with the standard library only.
"""

import json


def load_config(path):
    with open(path) as f:
        return json.load(f)


def decode_step_bytes(cfg, batch=1, context=1, weight_bytes=2, kv_bytes=2, table_bytes=2):
    """Bytes one decode step of `batch` sequences reads and writes, each sequence at `context`
    positions (its K/V cache read whole). Weights are read once per step whatever the batch;
    value rows, K/V and embedding rows scale with the batch. Returns a dict of parts and "total".
    """
    dim, n_layers = cfg["dim"], cfg["n_layers"]
    H = cfg["n_heads"]
    KV = cfg.get("n_kv_heads") or H
    hd = cfg.get("head_dim") or dim // H
    F = cfg.get("ffn_hidden_dim") or 0
    vocab = cfg["vocab_size"]
    mem = cfg.get("memory") or None
    mem_layers = set(mem["layers"]) if mem else set()
    attn = dim * H * hd * 2 + dim * KV * hd * 2 + 2 * dim  # wq, wo, wk, wv, two norms
    dense_ffn = 3 * F * dim
    parts = {"attention_weights": n_layers * attn * weight_bytes,
             "ffn_weights": (n_layers - len(mem_layers)) * dense_ffn * weight_bytes,
             "memory_weights": 0, "value_rows": 0}
    if mem:
        h, nk, kd, v = mem["heads"], mem["n_keys"], mem["k_dim"], mem["v_dim"]
        per = h * kd * dim + h * kd + 2 * h * nk * (kd // 2)  # query projection, sub-keys
        if mem.get("swilu_projection", True):
            per += v * dim + v
        if mem.get("value_proj", True):
            per += dim * v + dim
        if mem.get("gated", False):
            per += dim + 1
        parts["memory_weights"] = len(mem_layers) * per * weight_bytes
        parts["value_rows"] = len(mem_layers) * batch * h * mem["knn"] * v * table_bytes
    parts["logits_weights"] = (vocab * dim + dim) * weight_bytes
    parts["embedding_rows"] = batch * dim * weight_bytes
    parts["kv_cache"] = n_layers * batch * 2 * KV * hd * (context + 1) * kv_bytes
    parts["total"] = sum(parts.values())
    return parts


def roofline_tok_s(bytes_per_step, copy_gb_per_s, batch=1):
    """Tokens/s if a step took exactly its bytes over the measured bandwidth."""
    return batch * copy_gb_per_s * 1e9 / bytes_per_step


def roofline_fraction(tok_s, bytes_per_step, copy_gb_per_s, batch=1):
    """Measured tokens/s over the roofline's (1.0 = at the bandwidth limit)."""
    return tok_s / roofline_tok_s(bytes_per_step, copy_gb_per_s, batch)
