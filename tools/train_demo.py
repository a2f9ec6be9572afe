#!/usr/bin/python3
"""Trains the small memory-augmented demo model (models/demo/) on tools/demo_facts.py's facts.

A pre-norm Llama with bytes tokens whose FFN in one layer is a product-key memory layer
(docs/model.md, "The memory layer": per-half top-knn, knn*knn candidates, top-knn, softmax,
weighted value rows summed over heads, swilu projection). CPU only, 2 threads, reproducible: fixed
seeds, deterministic data order. Writes the TRAINING code's consolidated checkpoint
(consolidated.pth {"model", "optim"} + params.json, as tools/make_test_model.py does), so
tools/convert_lingua.py produces the served model.

    /usr/bin/python3 tools/train_demo.py OUT_CKPT_DIR [--dense] [--steps 1100] [--minutes 20] ...

The default is a fixed number of steps (reproducible: same data order, same schedule); --minutes
is a wall-clock cap (and with --steps 0 the budget the learning-rate schedule spans).

--dense trains the baseline: the same model with the memory layer replaced by a SwiGLU FFN of the
normal size. Progress goes to stderr (one key=value line per event); the last line is a JSON
summary (steps, seconds, final loss, recall) also written to OUT_CKPT_DIR/train_log.json.

Recall is greedy exact match of every fact's answer, computed teacher-forced (the argmax is right
at every answer byte, which is exactly when greedy decoding reproduces the answer).
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_facts import make_facts  # noqa: E402
from make_test_model import DEFAULTS as MODEL_DEFAULTS  # noqa: E402
from make_test_model import build_params, ffn_hidden_dim  # noqa: E402

VOCAB, BOS, EOS = 258, 256, 257
PAD = EOS  # padding after EOS; never in the loss

HPARAMS = dict(
    seed=0, entities=500, facts_seed=1234,
    dim=128, n_layers=3, n_heads=4, multiple_of=32, max_seqlen=128, rope_theta=10000.0,
    norm_eps=1e-5, mem_layers="1", mem_n_keys=256, mem_heads=4, mem_knn=16, mem_k_dim=128,
    batch=64, lr=2e-3, value_lr=2e-2, warmup=50, weight_decay=0.0, clip=1.0,
    answer_weight=4.0, minutes=20.0, steps=1100, eval_every=100,
)


# ------------------------------------------------------------------------------------------
# Model

class Linear(nn.Module):
    """nn.Linear's parameters and math, computed as a 1x1 convolution.

    Debian's torch links the reference BLAS (a few GFLOP/s), while its convolutions run on
    oneDNN (MKL-DNN) at tens of GFLOP/s; this makes training about 10x faster on this CPU.
    """

    def __init__(self, d_in, d_out, bias):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(d_out).uniform_(-bound, bound)) if bias else None

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1]).t()[None]                          # [1, in, N]
        y = F.conv1d(x, self.weight[:, :, None], self.bias)[0].t()      # [N, out]
        return y.reshape(*shape[:-1], y.shape[-1])


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seqlen, head_dim, theta):
    """cos, sin [seqlen, head_dim/2] for Meta's interleaved RoPE."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = torch.outer(torch.arange(seqlen, dtype=torch.float32), inv)
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):
    """x [B, T, heads, head_dim]; rotates pairs (x[2i], x[2i+1])."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((c * x0 - s * x1, s * x0 + c * x1), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.wq = Linear(dim, dim, bias=False)
        self.wk = Linear(dim, dim, bias=False)
        self.wv = Linear(dim, dim, bias=False)
        self.wo = Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.head_dim), cos, sin)
        k = apply_rope(self.wk(x).view(B, T, self.n_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(B, T, self.n_heads, self.head_dim)
        scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        out = torch.einsum("bhts,bshd->bthd", probs, v).reshape(B, T, -1)
        return self.wo(out)


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = Linear(dim, hidden, bias=False)
        self.w2 = Linear(hidden, dim, bias=False)
        self.w3 = Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class QueryProj(nn.Module):
    """Holds the query Linear under the training code's name query_mlps.0."""

    def __init__(self, dim, out):
        super().__init__()
        self.query_mlps = nn.Sequential(Linear(dim, out, bias=True))

    def forward(self, x):
        return self.query_mlps(x)


class ProductKeyMemory(nn.Module):
    """The memory layer of docs/model.md with swilu projection (no gating, no query batch norm)."""

    def __init__(self, dim, n_keys, heads, knn, k_dim):
        super().__init__()
        self.n_keys, self.heads, self.knn, self.k_dim = n_keys, heads, knn, k_dim
        half = k_dim // 2
        bound = 1.0 / math.sqrt(half)
        self.keys = nn.Parameter(torch.empty(2 * heads * n_keys, half).uniform_(-bound, bound))
        self.query_proj = QueryProj(dim, heads * k_dim)
        self.values = nn.Embedding(n_keys * n_keys, dim)
        nn.init.normal_(self.values.weight, std=dim ** -0.5)
        self.swilu_projection = Linear(dim, dim, bias=True)
        self.value_proj = Linear(dim, dim, bias=True)

    @staticmethod
    def _subkey_scores(q, keys):
        """q [N, H, half], keys [H, n_keys, half] -> [N, H, n_keys]: <q[n,h], keys[h,j]>.
        A grouped 1x1 convolution (one group per head), for oneDNN's speed (see Linear)."""
        N, H, half = q.shape
        n_keys = keys.shape[1]
        out = F.conv1d(q.reshape(N, H * half).t()[None], keys.reshape(H * n_keys, half, 1),
                       groups=H)                                          # [1, H*n_keys, N]
        return out[0].t().reshape(N, H, n_keys)

    def lookup(self, x):
        """x [N, dim] -> rows [N, heads, knn], weights [N, heads, knn] (softmax per head)."""
        N = x.shape[0]
        H, knn, n_keys, half = self.heads, self.knn, self.n_keys, self.k_dim // 2
        q = self.query_proj(x).view(N, H, 2, half)
        keys = self.keys.view(H, 2, n_keys, half)
        s1 = self._subkey_scores(q[:, :, 0], keys[:, 0])                 # [N, H, n_keys]
        s2 = self._subkey_scores(q[:, :, 1], keys[:, 1])
        top1, idx1 = s1.topk(knn, dim=-1)
        top2, idx2 = s2.topk(knn, dim=-1)
        cand = (top1[..., :, None] + top2[..., None, :]).view(N, H, knn * knn)
        cand_rows = (idx1[..., :, None] * n_keys + idx2[..., None, :]).view(N, H, knn * knn)
        scores, best = cand.topk(knn, dim=-1)
        rows = cand_rows.gather(-1, best)
        return rows, torch.softmax(scores, dim=-1)

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        rows, w = self.lookup(x)
        # Sum over heads and knn of w * values[row]: one bag of heads*knn rows per token.
        y = F.embedding_bag(rows.view(x.shape[0], -1), self.values.weight,
                            per_sample_weights=w.view(x.shape[0], -1), mode="sum")
        out = self.value_proj(y * F.silu(self.swilu_projection(x)))
        return out.view(shape)


class Block(nn.Module):
    def __init__(self, a, memory):
        super().__init__()
        self.attention = Attention(a["dim"], a["n_heads"])
        self.attention_norm = RMSNorm(a["dim"], a["norm_eps"])
        self.ffn_norm = RMSNorm(a["dim"], a["norm_eps"])
        if memory:
            self.feed_forward = ProductKeyMemory(a["dim"], a["mem_n_keys"], a["mem_heads"],
                                                 a["mem_knn"], a["mem_k_dim"])
        else:
            self.feed_forward = SwiGLU(a["dim"], ffn_hidden_dim(a["dim"], a["multiple_of"], None))

    def forward(self, h, cos, sin, mask):
        h = h + self.attention(self.attention_norm(h), cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class DemoModel(nn.Module):
    def __init__(self, a, mem_layers):
        super().__init__()
        self.a = a
        self.tok_embeddings = nn.Embedding(VOCAB, a["dim"])
        self.layers = nn.ModuleList(Block(a, i in mem_layers) for i in range(a["n_layers"]))
        self.norm = RMSNorm(a["dim"], a["norm_eps"])
        self.output = Linear(a["dim"], VOCAB, bias=False)
        cos, sin = rope_tables(a["max_seqlen"], a["dim"] // a["n_heads"], a["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens):
        T = tokens.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, self.cos[:T], self.sin[:T], mask)
        return self.output(self.norm(h))


# ------------------------------------------------------------------------------------------
# Data

def encode_facts(facts):
    """tokens [F, T] (BOS + text + EOS, padded), targets [F, T] (next token, -1 = none),
    answer_mask [F, T] (target is an answer byte or the final EOS)."""
    seqs, ans_start = [], []
    for f in facts:
        p = list(f["prompt"].encode("utf-8"))
        t = list(f["answer"].encode("utf-8"))
        seqs.append([BOS] + p + t + [EOS])
        ans_start.append(len(p))  # target index of the first answer byte
    T = max(len(s) for s in seqs) - 1
    tokens = torch.full((len(seqs), T), PAD, dtype=torch.long)
    targets = torch.full((len(seqs), T), -1, dtype=torch.long)
    answer = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        n = len(s) - 1
        tokens[i, :n] = torch.tensor(s[:-1])
        targets[i, :n] = torch.tensor(s[1:])
        answer[i, ans_start[i]:n] = True
    return tokens, targets, answer


@torch.no_grad()
def recall(model, tokens, targets, answer, batch=512):
    """Fraction of facts whose answer bytes (the EOS not counted) are all the argmax."""
    model.eval()
    hits = 0
    for i in range(0, tokens.shape[0], batch):
        logits = model(tokens[i:i + batch])
        tgt = targets[i:i + batch]
        m = answer[i:i + batch] & (tgt != EOS)
        ok = (logits.argmax(-1) == tgt) | ~m
        hits += int(ok.all(dim=1).sum())
    model.train()
    return hits / tokens.shape[0]


# ------------------------------------------------------------------------------------------
# Checkpoint

def state_dict_for_checkpoint(model):
    """The training code's tensor names; fp32 except values.weight (bf16). Each memory layer
    holds its own table here (one memory layer in the demo), so no shared copies to write."""
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().clone().contiguous()
        sd[k] = v.to(torch.bfloat16) if k.endswith("values.weight") else v.float()
    return sd


def write_checkpoint(out_dir, model, a, mem_layers, log):
    os.makedirs(out_dir, exist_ok=True)
    sd = state_dict_for_checkpoint(model)
    torch.save({"model": sd, "optim": {}}, os.path.join(out_dir, "consolidated.pth"))
    margs = dict(MODEL_DEFAULTS)
    margs.update({k: a[k] for k in ("dim", "n_layers", "n_heads", "multiple_of", "max_seqlen",
                                    "rope_theta", "norm_eps", "mem_n_keys", "mem_heads",
                                    "mem_knn", "mem_k_dim", "seed")})
    margs.update(n_kv_heads=a["n_heads"], mem_v_dim=-1, share_values=True, swilu=True,
                 gated=False, tokenizer="bytes",
                 mem_layers=",".join(str(i) for i in sorted(mem_layers)))
    params = build_params(margs, VOCAB, None, out_dir)
    params["name"] = "memserve_demo_dense" if not mem_layers else "memserve_demo"
    params["steps"] = log["steps"]
    params["data"]["batch_size"] = a["batch"]
    params["optim"].update(lr=a["lr"], weight_decay=a["weight_decay"], clip=a["clip"],
                           warmup=a["warmup"])
    params["model"]["productkey_args"]["value_fixed_lr"] = a["value_lr"]
    params["demo_training"] = {k: a[k] for k in sorted(a)}
    with open(os.path.join(out_dir, "params.json"), "w") as f:
        json.dump(params, f, indent=1)
    with open(os.path.join(out_dir, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)


# ------------------------------------------------------------------------------------------
# Training

def train(out_dir, a, dense):
    torch.manual_seed(a["seed"])
    torch.set_num_threads(2)
    mem_layers = set() if dense else {int(s) for s in a["mem_layers"].split(",") if s.strip()}
    facts = make_facts(a["entities"], a["facts_seed"])
    tokens, targets, answer = encode_facts(facts)
    n = tokens.shape[0]
    model = DemoModel(a, mem_layers)
    value_params = [p for name, p in model.named_parameters() if name.endswith("values.weight")]
    other = [p for name, p in model.named_parameters() if not name.endswith("values.weight")]
    groups = [{"params": other, "lr": a["lr"], "base_lr": a["lr"]}]
    if value_params:
        groups.append({"params": value_params, "lr": a["value_lr"], "base_lr": a["value_lr"]})
    opt = torch.optim.Adam(groups, betas=(0.9, 0.95), eps=1e-8, weight_decay=a["weight_decay"])
    n_params = {"total": sum(p.numel() for p in model.parameters()),
                "values": sum(p.numel() for p in value_params)}
    n_params["non_values"] = n_params["total"] - n_params["values"]
    print(f"event=start dense={int(dense)} facts={n} params={n_params['total']} "
          f"value_params={n_params['values']} hparams={json.dumps(a, sort_keys=True)}",
          file=sys.stderr, flush=True)

    loss_w = torch.where(answer, torch.tensor(a["answer_weight"]), torch.tensor(1.0))
    loss_w = loss_w * (targets >= 0)
    data_gen = torch.Generator().manual_seed(a["seed"] + 1)
    order, pos = torch.randperm(n, generator=data_gen), 0
    budget = a["minutes"] * 60.0
    t0 = time.time()
    step, curve, evals = 0, [], []
    total_steps = a["steps"] or None
    while True:
        elapsed = time.time() - t0
        if (total_steps and step >= total_steps) or elapsed >= budget:
            break  # --minutes also caps a --steps run
        if pos + a["batch"] > n:
            order, pos = torch.randperm(n, generator=data_gen), 0
        idx = order[pos:pos + a["batch"]]
        pos += a["batch"]
        T = int((targets[idx] >= 0).sum(1).max())
        x, y, w = tokens[idx, :T], targets[idx, :T], loss_w[idx, :T]
        # Linear warmup, then constant for a time budget or cosine to 10% for a step budget.
        frac = step / total_steps if total_steps else elapsed / budget
        scale = min(1.0, (step + 1) / a["warmup"])
        scale *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        logits = model(x)
        per_tok = F.cross_entropy(logits.reshape(-1, VOCAB), y.clamp(min=0).reshape(-1),
                                  reduction="none")
        loss = (per_tok * w.reshape(-1)).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(other, a["clip"])
        opt.step()
        step += 1
        curve.append(float(loss))
        if step % 20 == 0:
            print(f"event=step step={step} loss={sum(curve[-20:]) / 20:.4f} "
                  f"seconds={time.time() - t0:.1f}", file=sys.stderr, flush=True)
        if a["eval_every"] and step % a["eval_every"] == 0:
            r = recall(model, tokens[:512], targets[:512], answer[:512])  # a quick estimate
            evals.append({"step": step, "seconds": round(time.time() - t0, 1), "recall_first512": r})
            print(f"event=eval step={step} recall_first512={r:.4f} seconds={time.time() - t0:.1f}",
                  file=sys.stderr, flush=True)
    train_seconds = time.time() - t0
    final = recall(model, tokens, targets, answer)
    # What the served model sees: the value table rounded to bf16.
    with torch.no_grad():
        for p in value_params:
            p.copy_(p.to(torch.bfloat16).float())
    final_bf16 = recall(model, tokens, targets, answer)
    log = {"dense": dense, "steps": step, "train_seconds": round(train_seconds, 1),
           "params": n_params, "facts": n, "final_loss": round(sum(curve[-20:]) / 20, 4),
           "recall": final, "recall_bf16_values": final_bf16, "evals": evals,
           "loss_every_50_steps": [round(sum(curve[i:i + 50]) / len(curve[i:i + 50]), 4)
                                   for i in range(0, len(curve), 50)],
           "hparams": a}
    write_checkpoint(out_dir, model, a, mem_layers, log)
    summary = {k: log[k] for k in ("dense", "steps", "train_seconds", "final_loss", "recall",
                                   "recall_bf16_values", "params")}
    print(json.dumps(summary))
    return log


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--dense", action="store_true",
                    help="baseline: the memory layer replaced by a normal SwiGLU FFN")
    for k, v in HPARAMS.items():
        ap.add_argument(f"--{k}", type=type(v), default=v)
    x = ap.parse_args(argv)
    a = {k: getattr(x, k) for k in HPARAMS}
    train(x.out_dir, a, x.dense)
    return 0


if __name__ == "__main__":
    sys.exit(main())
