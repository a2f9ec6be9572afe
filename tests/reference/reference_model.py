#!/usr/bin/python3
"""An independent fp32 PyTorch reference of the memory-augmented Llama (docs/model.md).

It reads the TRAINING checkpoint format (consolidated.pth + params.json) directly, so it shares no
code with tools/convert_lingua.py, and implements the forward pass step by step as the spec states
it. Everything is fp32; the bf16 value table is gathered in bf16 and widened to fp32 row by row.

    m = ReferenceModel.load(ckpt_dir)
    logits, trace = m.forward(tokens)          # [T, vocab] fp32, one trace dict per memory layer
    ids = m.greedy(tokens, n)                  # n argmax continuations (KV cache)
    state = m.new_cache(); last = m.step(state, chunk)   # incremental decode, [vocab]
    ids = m.encode("text", bos=True); text = m.decode(ids)

CLI: reference_model.py CKPT_DIR [--tokens 1,2,3 | --text "hi"] [--greedy 8] [--no_trace]
prints JSON.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

# Training-code defaults for fields params.json may leave out (docs/model.md).
_MODEL_DEFAULTS = dict(dim=512, n_layers=8, head_dim=None, n_heads=None, n_kv_heads=None,
                       ffn_dim_multiplier=None, multiple_of=256, norm_eps=1e-5,
                       rope_theta=10000.0, max_seqlen=1024, sliding_window=None)
_PK_DEFAULTS = dict(is_enabled=False, layers="", mem_n_keys=1024, mem_heads=4, mem_knn=32,
                    mem_share_values=True, mem_k_dim=512, mem_v_dim=-1, swilu_projection=True,
                    mem_gated=False, peer_variant=False)

# Brute-force candidate gaps are computed in chunks of at most this many float32 scores.
_GAP_CHUNK_ELEMS = 1 << 25


def rms_norm(x, weight, eps):
    """x * rsqrt(mean(x^2) + eps) * weight, in fp32."""
    x = x.float()
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight.float()


def rope_cos_sin(positions, head_dim, theta):
    """cos, sin [T, head_dim/2] for angle pos * theta^(-2i/head_dim), fp32."""
    i = torch.arange(0, head_dim, 2, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (i / head_dim))
    angles = torch.outer(positions.float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Meta's interleaved RoPE. x [T, heads, head_dim]; pairs (x[2i], x[2i+1]) are rotated."""
    x0, x1 = x[..., 0::2], x[..., 1::2]                 # [T, heads, head_dim/2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = torch.empty_like(x)
    out[..., 0::2] = c * x0 - s * x1
    out[..., 1::2] = s * x0 + c * x1
    return out


class ReferenceModel:
    def __init__(self, params, state_dict, ckpt_dir=None):
        torch.set_num_threads(os.cpu_count() or 1)
        self.params = params
        self.ckpt_dir = ckpt_dir
        m = dict(_MODEL_DEFAULTS)
        m.update({k: v for k, v in params["model"].items() if v is not None})
        pk = dict(_PK_DEFAULTS)
        pk.update({k: v for k, v in (params["model"].get("productkey_args") or {}).items()
                   if v is not None})
        self.dim = m["dim"]
        self.n_layers = m["n_layers"]
        self.n_heads = m["n_heads"] or self.dim // m["head_dim"]
        self.head_dim = m["head_dim"] or self.dim // self.n_heads
        self.n_kv_heads = m["n_kv_heads"] or self.n_heads
        self.norm_eps = float(m["norm_eps"])
        self.rope_theta = float(m["rope_theta"])
        self.max_seqlen = m["max_seqlen"]
        # None = full causal. params.json's sliding_window is ignored, as the training code
        # ignores it; a caller may set a window explicitly (the engine's opt-in).
        self.sliding_window = None
        if pk["peer_variant"] and pk["is_enabled"]:
            raise NotImplementedError("peer_variant is not implemented in the reference")
        listed = [int(s) for s in str(pk["layers"]).split(",") if s.strip()]
        self.mem_layers = sorted({i for i in listed if 0 <= i < self.n_layers}) \
            if pk["is_enabled"] else []
        self.mem_heads = pk["mem_heads"]
        self.mem_knn = pk["mem_knn"]
        self.mem_n_keys = pk["mem_n_keys"]
        self.mem_k_dim = pk["mem_k_dim"]
        self.mem_v_dim = pk["mem_v_dim"] if pk["mem_v_dim"] > 0 else self.dim
        self.swilu = pk["swilu_projection"]
        self.value_proj = pk["swilu_projection"] or pk["mem_v_dim"] > 0
        self.gated = pk["mem_gated"]

        # fp32 copies of every parameter except value tables, which stay bf16.
        self.w = {}
        for k, v in state_dict.items():
            self.w[k] = v if k.endswith("values.weight") else v.float()
        if "output.weight" not in self.w and m.get("weight_tying"):
            self.w["output.weight"] = self.w["tok_embeddings.weight"]
        self.vocab_size = self.w["tok_embeddings.weight"].shape[0]

        tok = (params.get("data") or {}).get("tokenizer") or {"name": "bytes"}
        self.tokenizer_name = tok.get("name", "bytes")
        self.tokenizer_path = tok.get("path")
        self._sp = None

    @classmethod
    def load(cls, ckpt_dir):
        with open(os.path.join(ckpt_dir, "params.json")) as f:
            params = json.load(f)
        ckpt = torch.load(os.path.join(ckpt_dir, "consolidated.pth"), map_location="cpu",
                          weights_only=True)
        return cls(params, ckpt["model"], ckpt_dir)

    # ---------------------------------------------------------------------------------------
    # Blocks

    def _attention(self, i, x, positions, cache):
        """x [T, dim] (attention_norm output); cache (or None) holds this layer's past k/v.
        Returns [T, dim]."""
        p = f"layers.{i}.attention."
        T = x.shape[0]
        q = (F.linear(x, self.w[p + "wq.weight"])).view(T, self.n_heads, self.head_dim)
        k = (F.linear(x, self.w[p + "wk.weight"])).view(T, self.n_kv_heads, self.head_dim)
        v = (F.linear(x, self.w[p + "wv.weight"])).view(T, self.n_kv_heads, self.head_dim)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            if cache["k"][i] is not None:
                k = torch.cat([cache["k"][i], k], 0)
                v = torch.cat([cache["v"][i], v], 0)
            cache["k"][i], cache["v"][i] = k, v
        S = k.shape[0]                                  # keys: positions 0..S-1
        group = self.n_heads // self.n_kv_heads
        # Query head j uses kv head j // group: view q as [T, n_kv, group, hd].
        qg = q.view(T, self.n_kv_heads, group, self.head_dim)
        scores = torch.einsum("tkgd,skd->kgts", qg, k).reshape(self.n_heads, T, S) \
            / math.sqrt(self.head_dim)                                          # [H, T, S]
        key_pos = torch.arange(S)
        allowed = key_pos[None, :] <= positions[:, None]                        # causal
        if self.sliding_window:
            allowed &= positions[:, None] - key_pos[None, :] < self.sliding_window
        scores = scores.masked_fill(~allowed[None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        probs = probs.view(self.n_kv_heads, group, T, S)
        out = torch.einsum("kgts,skd->tkgd", probs, v).reshape(T, self.n_heads * self.head_dim)
        return F.linear(out, self.w[p + "wo.weight"])

    def _swiglu(self, i, x):
        p = f"layers.{i}.feed_forward."
        return F.linear(F.silu(F.linear(x, self.w[p + "w1.weight"])) *
                        F.linear(x, self.w[p + "w3.weight"]), self.w[p + "w2.weight"])

    def _values(self, i):
        name = f"layers.{i}.feed_forward.values.weight"
        if name in self.w:
            return self.w[name]
        # Some exporters keep a shared table only once: use the first memory layer's copy.
        for j in self.mem_layers:
            n = f"layers.{j}.feed_forward.values.weight"
            if n in self.w:
                return self.w[n]
        raise KeyError(name)

    def _memory(self, i, x, want_trace):
        """Product-key memory layer. x [N, dim] (ffn_norm output). Returns out [N, dim], trace."""
        p = f"layers.{i}.feed_forward."
        N = x.shape[0]
        H, knn, n_keys, k_dim = self.mem_heads, self.mem_knn, self.mem_n_keys, self.mem_k_dim
        half = k_dim // 2
        # 1. queries; head h = columns [h*k_dim, (h+1)*k_dim)
        q = F.linear(x, self.w[p + "query_proj.query_mlps.0.weight"]) + \
            self.w[p + "query_proj.query_mlps.0.bias"]
        q = q.view(N, H, k_dim)
        q1, q2 = q[..., :half], q[..., half:]           # 2. halves
        keys = self.w[p + "keys"].view(H, 2, n_keys, half)
        # 3. sub-key scores [N, H, n_keys]
        s1 = torch.einsum("nhd,hkd->nhk", q1, keys[:, 0])
        s2 = torch.einsum("nhd,hkd->nhk", q2, keys[:, 1])
        # 4. top-knn per half
        top1, idx1 = s1.topk(knn, dim=-1)
        top2, idx2 = s2.topk(knn, dim=-1)
        # 5. knn*knn candidates, then top-knn (sorted descending)
        cand_scores = (top1[..., :, None] + top2[..., None, :]).reshape(N, H, knn * knn)
        cand_rows = (idx1[..., :, None] * n_keys + idx2[..., None, :]).reshape(N, H, knn * knn)
        scores, best = cand_scores.topk(knn, dim=-1, sorted=True)
        rows = cand_rows.gather(-1, best)               # [N, H, knn]
        # 6. softmax per head, fp32
        weights = torch.softmax(scores, dim=-1)
        # 7. weighted value read, summed over heads and knn: [N, v_dim]
        gathered = self._values(i)[rows.reshape(-1)].float().view(N, H, knn, self.mem_v_dim)
        y = (weights[..., None] * gathered).sum(dim=(1, 2))
        # 8. output projection / gating
        if self.swilu:
            gate = F.silu(F.linear(x, self.w[p + "swilu_projection.weight"]) +
                          self.w[p + "swilu_projection.bias"])
            out = F.linear(y * gate, self.w[p + "value_proj.weight"], self.w[p + "value_proj.bias"])
        elif self.value_proj:
            out = F.linear(y, self.w[p + "value_proj.weight"], self.w[p + "value_proj.bias"])
        else:
            out = y
        if self.gated:
            out = torch.sigmoid(F.linear(x, self.w[p + "gating.weight"]) + self.w[p + "gating.bias"]) * out
        trace = None
        if want_trace:
            trace = dict(layer=i, indices=rows.clone(), scores=scores.clone(),
                         candidate_gap=self._brute_force_gap(s1, s2, knn))
        return out, trace

    @staticmethod
    def _brute_force_gap(s1, s2, knn):
        """[N, H]: (knn-th best) - (knn+1-th best) score over ALL n_keys^2 rows. +inf when
        knn == n_keys^2 (nothing is left out)."""
        N, H, n_keys = s1.shape
        if knn >= n_keys * n_keys:
            return torch.full((N, H), float("inf"))
        gaps = torch.empty(N, H)
        per_token = H * n_keys * n_keys
        chunk = max(1, _GAP_CHUNK_ELEMS // per_token)
        for a in range(0, N, chunk):
            b = min(N, a + chunk)
            full = (s1[a:b, :, :, None] + s2[a:b, :, None, :]).reshape(b - a, H, -1)
            top = full.topk(knn + 1, dim=-1).values
            gaps[a:b] = top[..., knn - 1] - top[..., knn]
        return gaps

    # ---------------------------------------------------------------------------------------
    # Whole model

    def _run(self, tokens, cache, want_trace, last_only=False):
        tokens = torch.as_tensor(list(tokens), dtype=torch.long)
        T = tokens.shape[0]
        start = cache["pos"] if cache is not None else 0
        if T == 0:
            raise ValueError("empty token list")
        if start + T > self.max_seqlen:
            raise ValueError(f"positions up to {start + T - 1} exceed max_seqlen "
                             f"{self.max_seqlen} (out of the training distribution)")
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size:
            raise ValueError(f"token id out of range [0, {self.vocab_size})")
        positions = torch.arange(start, start + T)
        h = self.w["tok_embeddings.weight"][tokens]      # [T, dim]
        trace = []
        for i in range(self.n_layers):
            p = f"layers.{i}."
            h = h + self._attention(i, rms_norm(h, self.w[p + "attention_norm.weight"],
                                                self.norm_eps), positions, cache)
            x = rms_norm(h, self.w[p + "ffn_norm.weight"], self.norm_eps)
            if i in self.mem_layers:
                out, tr = self._memory(i, x, want_trace)
                if tr is not None:
                    trace.append(tr)
            else:
                out = self._swiglu(i, x)
            h = h + out
        if cache is not None:
            cache["pos"] = start + T
        if last_only:
            h = h[-1:]
        logits = F.linear(rms_norm(h, self.w["norm.weight"], self.norm_eps), self.w["output.weight"])
        return logits, trace

    @torch.no_grad()
    def forward(self, tokens, trace=True):
        """logits [T, vocab] fp32 for the whole (causal) sequence starting at position 0, and a
        list (one per memory layer, in layer order) of dict(layer, indices [T,heads,knn] row ids
        sorted by score descending, scores [T,heads,knn], candidate_gap [T,heads])."""
        return self._run(tokens, None, trace)

    def new_cache(self):
        return {"pos": 0, "k": [None] * self.n_layers, "v": [None] * self.n_layers}

    @torch.no_grad()
    def step(self, state, token_ids):
        """Appends token_ids (a chunk, >= 1 id) to the cached sequence; returns the logits of the
        chunk's last position [vocab]."""
        logits, _ = self._run(token_ids, state, False, last_only=True)
        return logits[0]

    @torch.no_grad()
    def greedy(self, tokens, n):
        """n greedy (argmax) continuation ids of `tokens`, using the KV cache."""
        state = self.new_cache()
        out = []
        logits = self.step(state, tokens)
        for j in range(n):
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            if j + 1 < n:
                logits = self.step(state, [nxt])
        return out

    # ---------------------------------------------------------------------------------------
    # Tokenizer

    def _sentencepiece(self):
        if self._sp is None:
            import sentencepiece  # Debian: python3-sentencepiece
            path = self.tokenizer_path
            if not (path and os.path.isfile(path)) and self.ckpt_dir:
                for c in ([os.path.join(self.ckpt_dir, os.path.basename(path))] if path else []) \
                        + [os.path.join(self.ckpt_dir, "tokenizer.model")]:
                    if os.path.isfile(c):
                        path = c
                        break
            self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
        return self._sp

    @property
    def bos_id(self):
        return 256 if self.tokenizer_name == "bytes" else self._sentencepiece().bos_id()

    @property
    def eos_id(self):
        return 257 if self.tokenizer_name == "bytes" else self._sentencepiece().eos_id()

    def encode(self, text, bos=True, eos=False):
        if self.tokenizer_name == "bytes":
            ids = list(text.encode("utf-8"))
        elif self.tokenizer_name == "sp":
            ids = self._sentencepiece().encode(text)
        else:
            raise NotImplementedError(f"tokenizer {self.tokenizer_name}")
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids):
        if self.tokenizer_name == "bytes":
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="backslashreplace")
        if self.tokenizer_name == "sp":
            return self._sentencepiece().decode(list(ids))
        raise NotImplementedError(f"tokenizer {self.tokenizer_name}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="fp32 reference forward of a training checkpoint")
    ap.add_argument("ckpt_dir")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--text", help="text to encode (BOS added)")
    ap.add_argument("--greedy", type=int, default=0, help="greedy continuation length")
    ap.add_argument("--no_trace", action="store_true", help="omit memory indices from output")
    a = ap.parse_args(argv)
    m = ReferenceModel.load(a.ckpt_dir)
    if a.tokens:
        tokens = [int(t) for t in a.tokens.split(",") if t.strip()]
    elif a.text is not None:
        tokens = m.encode(a.text)
    else:
        tokens = [m.bos_id]
    logits, trace = m.forward(tokens, trace=not a.no_trace)
    out = {
        "tokens": tokens,
        "argmax": logits.argmax(-1).tolist(),
        "last_logits_top5": torch.topk(logits[-1], min(5, logits.shape[-1])).indices.tolist(),
        "last_logits": [round(float(v), 6) for v in logits[-1]],
    }
    if not a.no_trace:
        out["memory"] = [{"layer": t["layer"], "indices_last": t["indices"][-1].tolist(),
                          "min_gap": float(t["candidate_gap"].min())} for t in trace]
    if a.greedy:
        g = m.greedy(tokens, a.greedy)
        out["greedy"] = g
        out["greedy_text"] = m.decode(g)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
