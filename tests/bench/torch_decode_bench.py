"""PyTorch baseline of memserve's GPU decode: the same model (docs/model.md) written plainly in
PyTorch, bf16 weights on the GPU, timed eager and as a CUDA graph at several batch sizes.

Model: a serving checkpoint (--model DIR, e.g. the one tools/make_test_model.py --preset pkplus
--serving writes, so memserve and this baseline run the same weights), or the 373M "pkplus" shape
with random weights drawn on the device (--preset pkplus). The memory read is
torch.nn.functional.embedding_bag (mode "sum", per-sample weights = the softmaxed scores, one bag
of heads x knn rows per token), as the training code reads its value table; sub-key scores and
top-k run in the compute dtype, the softmax in fp32.

Protocol (the same as tests/bench/decode_bench): B sequences with random --prompt_tokens prompts,
prefilled one token per step (not timed), then --decode_tokens greedy steps of all B in lockstep,
timed with CUDA events; one warm-up run, the median of --runs. tokens/s = B x decode tokens /
decode time. "graph" captures one decode step (embedding to argmax, the next token and position
written on the device) as a CUDA graph and replays it. At batch 1 it also reports the fraction of
the memory-bandwidth roofline (tests/bench/gpu_roofline.py) against a device-to-device copy
measured here (or --copy_gb_per_s).

    python3 tests/bench/torch_decode_bench.py --model /tmp/pkplus --batch 1,8,64,256
    python3 tests/bench/torch_decode_bench.py --preset pkplus --modes graph

Prints one JSON line per measurement. Exit codes: 0 measured; 77 no CUDA device and --device cuda
(the default; one line says so); 2 bad arguments. --device cpu --dtype float32 runs the same code
on the CPU (the test compares it with tests/reference there). Python 3.12, torch and numpy only.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import gpu_roofline  # noqa: E402

SKIP_EXIT = 77


def _rms_norm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def _rope(x, cos, sin):
    """Meta's interleaved RoPE on x [B, heads, hd] with cos/sin [1, hd/2] (fp32 math)."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((cos * x0 - sin * x1, sin * x0 + cos * x1), dim=-1)
    return out.flatten(-2).to(x.dtype)


class TorchDecodeModel:
    """The decode step of a memserve config over weights in `dtype` on `device`, with a static
    K/V cache of `max_len` positions per sequence (graph-capturable: no host sync, no shapes that
    depend on the position)."""

    def __init__(self, cfg, tensors, batch, max_len, device, dtype, attention="auto"):
        self.cfg, self.batch, self.max_len, self.dtype = cfg, batch, max_len, dtype
        self.dim, self.n_layers = cfg["dim"], cfg["n_layers"]
        self.H = cfg["n_heads"]
        self.KV = cfg.get("n_kv_heads") or self.H
        self.hd = cfg.get("head_dim") or self.dim // self.H
        self.eps = cfg.get("norm_eps", 1e-5)
        self.mem = cfg.get("memory") or None
        self.mem_layers = set(self.mem["layers"]) if self.mem else set()
        if attention == "auto":
            attention = "sdpa" if hasattr(F, "scaled_dot_product_attention") else "manual"
        self.attention = attention

        def get(name, dt=dtype):
            return tensors[name].to(device=device, dtype=dt)

        self.tok = get("tok_embeddings.weight")
        self.norm = get("norm.weight")
        self.output = get("output.weight")
        table_dtype = torch.bfloat16 if dtype == torch.bfloat16 else torch.float32
        self.shared_table = None
        if self.mem and self.mem.get("share_values", True):
            self.shared_table = get("memory.values.weight", table_dtype)
        self.layers = []
        for i in range(self.n_layers):
            p = f"layers.{i}."
            L = {k: get(p + "attention." + k + ".weight") for k in ("wq", "wk", "wv", "wo")}
            L["attention_norm"] = get(p + "attention_norm.weight")
            L["ffn_norm"] = get(p + "ffn_norm.weight")
            f = p + "feed_forward."
            if i in self.mem_layers:
                m = self.mem
                L["keys"] = get(f + "keys").view(m["heads"], 2, m["n_keys"], m["k_dim"] // 2)
                L["q_w"] = get(f + "query_proj.query_mlps.0.weight")
                L["q_b"] = get(f + "query_proj.query_mlps.0.bias")
                L["table"] = (self.shared_table if self.shared_table is not None
                              else get(f + "values.weight", table_dtype))
                for k in ("swilu_projection", "value_proj", "gating"):
                    if f + k + ".weight" in tensors:
                        L[k + "_w"] = get(f + k + ".weight")
                        L[k + "_b"] = get(f + k + ".bias")
            else:
                for k in ("w1", "w2", "w3"):
                    L[k] = get(f + k + ".weight")
            shape = (batch, self.KV, max_len, self.hd)
            L["k_cache"] = torch.zeros(shape, dtype=dtype, device=device)
            L["v_cache"] = torch.zeros(shape, dtype=dtype, device=device)
            self.layers.append(L)
        half = self.hd // 2
        freqs = 1.0 / (cfg.get("rope_theta", 10000.0) **
                       (torch.arange(0, half, dtype=torch.float32) * 2 / self.hd))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), freqs)
        self.cos = angles.cos().to(device)  # [max_len, hd/2]
        self.sin = angles.sin().to(device)
        self.positions = torch.arange(max_len, device=device)

    def _attention(self, L, x, pos):
        B, H, KV, hd = x.shape[0], self.H, self.KV, self.hd
        q = F.linear(x, L["wq"]).view(B, H, hd)
        k = F.linear(x, L["wk"]).view(B, KV, hd)
        v = F.linear(x, L["wv"]).view(B, KV, hd)
        cos, sin = self.cos.index_select(0, pos), self.sin.index_select(0, pos)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        L["k_cache"].index_copy_(2, pos, k.unsqueeze(2))
        L["v_cache"].index_copy_(2, pos, v.unsqueeze(2))
        keys, values = L["k_cache"], L["v_cache"]
        if KV != H:
            keys = keys.repeat_interleave(H // KV, dim=1)
            values = values.repeat_interleave(H // KV, dim=1)
        visible = (self.positions <= pos).view(1, 1, 1, -1)  # [1, 1, 1, max_len]
        q = q.unsqueeze(2)  # [B, H, 1, hd]
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
        else:
            s = torch.matmul(q.float(), keys.float().transpose(-1, -2)) / math.sqrt(hd)
            s = s.masked_fill(~visible, float("-inf"))
            out = torch.matmul(torch.softmax(s, dim=-1), values.float()).to(x.dtype)
        return F.linear(out.reshape(B, H * hd), L["wo"])

    def _memory(self, L, x):
        m = self.mem
        B, heads, nk, knn = x.shape[0], m["heads"], m["n_keys"], m["knn"]
        q = F.linear(x, L["q_w"], L["q_b"]).view(B, heads, 2, m["k_dim"] // 2)
        s = torch.einsum("bhtd,htnd->bhtn", q, L["keys"])  # [B, heads, 2, n_keys]
        sv, si = s.topk(knn, dim=-1)  # [B, heads, 2, knn]
        all_s = (sv[:, :, 0, :, None] + sv[:, :, 1, None, :]).view(B, heads, knn * knn)
        all_i = (si[:, :, 0, :, None] * nk + si[:, :, 1, None, :]).view(B, heads, knn * knn)
        best_s, best = all_s.topk(knn, dim=-1)  # [B, heads, knn]
        rows = all_i.gather(-1, best)
        w = torch.softmax(best_s.float(), dim=-1).to(L["table"].dtype)
        y = F.embedding_bag(rows.view(B, heads * knn), L["table"],
                            per_sample_weights=w.view(B, heads * knn), mode="sum").to(x.dtype)
        if "swilu_projection_w" in L:
            y = y * F.silu(F.linear(x, L["swilu_projection_w"], L["swilu_projection_b"]))
        if "value_proj_w" in L:
            y = F.linear(y, L["value_proj_w"], L["value_proj_b"])
        if "gating_w" in L:
            y = torch.sigmoid(F.linear(x, L["gating_w"], L["gating_b"])) * y
        return y

    def step(self, tokens, pos):
        """Logits [B, vocab] of one token per sequence (`tokens` [B] int64) at position `pos`
        ([1] int64 device tensor, the same for every sequence); appends to the K/V cache."""
        h = F.embedding(tokens, self.tok)
        for i, L in enumerate(self.layers):
            h = h + self._attention(L, _rms_norm(h, L["attention_norm"], self.eps), pos)
            x = _rms_norm(h, L["ffn_norm"], self.eps)
            if i in self.mem_layers:
                h = h + self._memory(L, x)
            else:
                h = h + F.linear(F.silu(F.linear(x, L["w1"])) * F.linear(x, L["w3"]), L["w2"])
        return F.linear(_rms_norm(h, self.norm, self.eps), self.output)


def load_checkpoint(model_dir):
    """(config dict, {name: CPU tensor}) of a memserve serving checkpoint (one safetensors file)."""
    from safetensors_io import SafetensorsFile  # tools/
    cfg = gpu_roofline.load_config(os.path.join(model_dir, "config.json"))
    st = SafetensorsFile(os.path.join(model_dir, "model.safetensors"))
    return cfg, {n: st.tensor(n) for n in st.order}


def random_checkpoint(preset, device, seed=0):
    """(config dict, {name: tensor on `device`}) of a preset shape with random weights drawn as
    tools/make_test_model.py --serving draws them (same shapes and scales)."""
    import convert_lingua  # tools/
    import make_test_model  # tools/
    a = dict(make_test_model.DEFAULTS)
    a.update(make_test_model.PRESETS[preset])
    a["seed"] = seed
    mem_layers = sorted(int(x) for x in a["mem_layers"].split(",") if x.strip())
    params = make_test_model.build_params(a, a["vocab"], None, "/tmp")
    cfg, _ = convert_lingua.model_config_from_params(params)
    g = torch.Generator(device=device).manual_seed(seed)
    tensors = {}
    for name, shape, kind, std, dt in make_test_model.tensor_plan(a, a["vocab"], mem_layers):
        if kind == "copy":
            continue
        if name == make_test_model.SHARED_TABLE:
            name = convert_lingua.SHARED_VALUES_NAME
        tensors[name] = make_test_model._draw(g, shape, kind, std, torch.bfloat16, device)
    return cfg, tensors


def copy_gb_per_s(device, mib=1024, reps=10):
    """Device-to-device copy bandwidth (bytes read + written), median of `reps`."""
    n = (mib << 20) // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    ms.sort()
    return 2 * n * 4 / (ms[len(ms) // 2] * 1e-3) / 1e9


class Runner:
    """Static input/output buffers around one model, the decode step eager or as a graph."""

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.tokens = torch.zeros(model.batch, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.graph = None

    def _step(self):
        logits = self.model.step(self.tokens, self.pos)
        self.tokens.copy_(logits.argmax(-1))
        self.pos.add_(1)

    def capture(self):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()
        self.pos.zero_()

    def run(self, prompts, decode, use_graph):
        """Prefills `prompts` [B, P] one position per step, then decodes `decode` steps; returns
        the decode time in seconds (CUDA events; host clock on the CPU)."""
        step = self.graph.replay if use_graph else self._step
        self.pos.zero_()
        for t in range(prompts.shape[1]):
            self.tokens.copy_(prompts[:, t])
            step()
        if self.device == "cpu":
            t0 = time.perf_counter()
            for _ in range(decode):
                step()
            return time.perf_counter() - t0
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(decode):
            step()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) * 1e-3


def emit(obj):
    print(json.dumps(obj), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="memserve serving checkpoint directory")
    src.add_argument("--preset", choices=["pkplus"], help="random weights of a preset shape")
    ap.add_argument("--batch", default="1,8,64,256", help="comma-separated batch sizes")
    ap.add_argument("--modes", default="eager,graph", help="eager, graph or both")
    ap.add_argument("--prompt_tokens", type=int, default=16)
    ap.add_argument("--decode_tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--attention", choices=["auto", "sdpa", "manual"], default="auto")
    ap.add_argument("--copy_gb_per_s", type=float, default=0,
                    help="the roofline's bandwidth (default: measured here)")
    a = ap.parse_args(argv)
    try:
        batches = [int(b) for b in a.batch.split(",")]
        modes = a.modes.split(",")
        if min(batches) < 1 or not set(modes) <= {"eager", "graph"}:
            raise ValueError
    except ValueError:
        print("torch_decode_bench: --batch must be integers >= 1, --modes eager and/or graph",
              file=sys.stderr)
        return 2
    if a.prompt_tokens < 1 or a.decode_tokens < 1 or a.runs < 1:
        print("torch_decode_bench: --prompt_tokens, --decode_tokens, --runs must be >= 1",
              file=sys.stderr)
        return 2
    if a.device == "cuda" and not torch.cuda.is_available():
        emit({"what": "skip", "reason": f"no CUDA device (torch {torch.__version__} sees none)"})
        return SKIP_EXIT
    if a.device == "cpu":
        modes = [m for m in modes if m == "eager"]
    dtype = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
    torch.manual_seed(0)
    if a.model:
        cfg, tensors = load_checkpoint(a.model)
    else:
        cfg, tensors = random_checkpoint(a.preset, a.device)
    # On the device once (each batch's model converts to `dtype` there).
    tensors = {n: t.to(a.device) for n, t in tensors.items()}
    max_len = a.prompt_tokens + a.decode_tokens + 4  # the graph's warm-up steps run past the end
    if max_len > cfg["max_seqlen"]:
        print(f"torch_decode_bench: prompt + decode tokens exceed max_seqlen {cfg['max_seqlen']}",
              file=sys.stderr)
        return 2
    info = {"what": "setup", "torch": torch.__version__, "device": a.device, "dtype": a.dtype,
            "model": a.model or a.preset, "dim": cfg["dim"], "n_layers": cfg["n_layers"],
            "vocab": cfg["vocab_size"], "memory": cfg.get("memory")}
    if a.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        bw = a.copy_gb_per_s or copy_gb_per_s(a.device)
        info["copy_gb_per_s"] = round(bw, 1)
    emit(info)

    g = torch.Generator().manual_seed(0)
    results = {}
    for B in batches:
        model = TorchDecodeModel(cfg, tensors, B, max_len, a.device, dtype, a.attention)
        runner = Runner(model, a.device)
        prompts = torch.randint(0, cfg["vocab_size"], (B, a.prompt_tokens), generator=g)
        prompts = prompts.to(a.device)
        for mode in modes:
            try:
                if mode == "graph":
                    runner.capture()
                times = [runner.run(prompts, a.decode_tokens, mode == "graph")
                         for _ in range(a.runs + 1)][1:]
            except RuntimeError as e:  # e.g. an op that cannot be captured: say so, go on
                emit({"what": "error", "mode": mode, "batch": B,
                      "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
                continue
            times.sort()
            t = times[len(times) // 2]
            r = {"what": "decode", "engine": "torch", "mode": mode, "batch": B,
                 "attention": model.attention, "decode_tokens": a.decode_tokens,
                 "decode_s": round(t, 5), "tok_s": round(B * a.decode_tokens / t, 1),
                 "step_ms": round(t / a.decode_tokens * 1e3, 4)}
            if B == 1 and a.device == "cuda":
                context = a.prompt_tokens + a.decode_tokens // 2
                step_bytes = gpu_roofline.decode_step_bytes(cfg, 1, context)["total"]
                r["step_bytes"] = step_bytes
                r["roofline_fraction"] = round(
                    gpu_roofline.roofline_fraction(r["tok_s"], step_bytes, bw), 4)
            results[(B, mode)] = r
            emit(r)
        del runner, model
        if a.device == "cuda":
            torch.cuda.empty_cache()
    for B in batches:
        if (B, "eager") in results and (B, "graph") in results:
            emit({"what": "graph_speedup", "batch": B, "x": round(
                results[(B, "graph")]["tok_s"] / results[(B, "eager")]["tok_s"], 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
