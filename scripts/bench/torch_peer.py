#!/usr/bin/env python3
"""The PyTorch side of `chatforge bench train` and `chatforge bench generate`.

Builds chatforge's transformer in plain PyTorch from a chatforge model directory (any directory
holding `config.json` with the fields of `GptConfig` and `model.safetensors` with chatforge's
parameter names, e.g. a checkpoint) and measures it. Both styles are supported:

    GPT-2 style  LayerNorm + learned positions + GELU(tanh) MLP + biases + tied embeddings
    Llama style  RMSNorm + RoPE (HF rotate_half) + SwiGLU + grouped-query attention + untied head

The model code is a port of `scripts/reference/gpt_fixture.py` (which the Rust parity tests pin)
with two changes a PyTorch user would make for speed: attention is
`F.scaled_dot_product_attention` (causal), and generation keeps a KV cache (keys and values
concatenated per layer, as Hugging Face's DynamicCache does).

Modes:

    train     median step time of forward + backward + clip_grad_norm_(1.0) + AdamW
              (betas 0.9/0.95, eps 1e-8, lr 1e-3, weight decay 0.1 on tensors with ndim >= 2
              only; torch's default AdamW implementation) for B x T random ids (seeded), in eager
              f32 and under `torch.autocast("cpu", dtype=torch.bfloat16)`; warm-up steps are
              excluded; peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`).
    generate  tokens/s of prefill (B prompts of P random tokens, one forward pass) and of greedy
              decode with the KV cache (the prompt prefilled once with batch 1, the cache copied
              to B rows, then N - 1 decode steps; decode tokens/s = B * (N - 1) / time), each
              timed separately, median of repeats.

`--device cuda` (or `cuda:N`) runs everything on a GPU: weights, batches, the KV cache and the
GEMM ceiling live there, TF32 is off (f32 means f32, as chatforge's cuBLAS products), autocast is
CUDA's, every timed region starts and ends with `torch.cuda.synchronize()`, and the memory
figures add the CUDA allocator's peak (`torch.cuda.max_memory_allocated`).

Standalone, it prints one JSON object to stdout:

    python3 scripts/bench/torch_peer.py --model DIR --mode train --batch 8 --steps 5
    python3 scripts/bench/torch_peer.py --model DIR --mode generate --prompt-tokens 64 \\
        --new-tokens 100 --batches 1,8 --repeats 3

With `--serve` it builds the model, prints one JSON line `{"ready": true, ...}`, then answers one
JSON command per stdin line with one JSON line on stdout, so that the chatforge CLI can
interleave its own repetitions with these (machine noise then hits both):

    {"cmd": "set_batch", "x": [[ids]], "y": [[ids]]}           -> {"ok": true}
    {"cmd": "train_step", "dtype": "f32" | "bf16"}             -> {"seconds", "loss"}
    {"cmd": "prefill", "ids": [[ids]]}                         -> {"seconds", "next": [ids]}
    {"cmd": "decode", "prompt": [ids], "batch": B, "new_tokens": N}
                            -> {"seconds", "first_token_seconds", "steps", "tokens": [row 0]}
    {"cmd": "matmul", "n": 2048, "repeats": 5}                 -> {"gflops", "seconds"}
    {"cmd": "memory"}          -> {"peak_rss_bytes", "rss_bytes"} (+ "peak_gpu_bytes" on CUDA)
    {"cmd": "quit"}

A failed command answers {"error": "..."}. Needs torch only (safetensors are read directly).
"""

import argparse
import json
import os
import resource
import struct
import sys
import time

import torch
import torch.nn.functional as F

# AdamW and clipping exactly as chatforge's OptimConfig::default() (crates/train/src/optim.rs).
LR, BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0

# Where everything runs (`--device`); set once in main().
DEVICE = torch.device("cpu")


def sync():
    """Waits for the device's queued work (a no-op on the CPU), so that timers measure it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)

SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F64": torch.float64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


# ---------------------------------------------------------------------------------------------
# Loading a chatforge model directory


def read_safetensors(path):
    """Float tensors of a safetensors file by name (read directly: no safetensors package)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        buf = bytearray(data[base + begin : base + end])
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(entry["shape"]).to(torch.float32).clone()
    return out


def param_shapes(cfg):
    """chatforge's parameter names and shapes (mirrors Params::expected_shapes)."""
    c, hd = cfg["n_embd"], cfg["n_embd"] // cfg["n_head"]
    f, bias = cfg["intermediate_size"], cfg["bias"]
    s = {"wte.weight": (cfg["vocab_size"], c)}
    if cfg["positions"] == "learned":
        s["wpe.weight"] = (cfg["context_length"], c)

    def linear(name, out_dim, in_dim):
        s[name + ".weight"] = (out_dim, in_dim)
        if bias:
            s[name + ".bias"] = (out_dim,)

    def norm(name):
        s[name + ".weight"] = (c,)
        if cfg["norm"] == "layernorm" and bias:
            s[name + ".bias"] = (c,)

    for i in range(cfg["n_layer"]):
        p = f"blocks.{i}"
        norm(p + ".ln_1")
        linear(p + ".attn.q_proj", cfg["n_head"] * hd, c)
        linear(p + ".attn.k_proj", cfg["n_kv_head"] * hd, c)
        linear(p + ".attn.v_proj", cfg["n_kv_head"] * hd, c)
        linear(p + ".attn.o_proj", c, cfg["n_head"] * hd)
        norm(p + ".ln_2")
        if cfg["mlp"] == "gelu":
            linear(p + ".mlp.fc", f, c)
            linear(p + ".mlp.proj", c, f)
        else:
            linear(p + ".mlp.gate_proj", f, c)
            linear(p + ".mlp.up_proj", f, c)
            linear(p + ".mlp.down_proj", c, f)
    norm("ln_f")
    if not cfg["tie_embeddings"]:
        s["lm_head.weight"] = (cfg["vocab_size"], c)
    return s


def load_model_dir(model_dir):
    """(config dict, {name: f32 tensor}) with every name and shape checked against the config."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    expected = param_shapes(cfg)
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(f"model.safetensors lacks {name}")
        if tuple(tensors[name].shape) != tuple(shape):
            raise ValueError(f"{name}: shape {tuple(tensors[name].shape)}, expected {shape}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ValueError(f"model.safetensors has unexpected tensors: {extra[:5]}")
    return cfg, {k: tensors[k] for k in sorted(expected)}


# ---------------------------------------------------------------------------------------------
# The model (functional, over a {name: tensor} dict)


def norm(cfg, p, name, x):
    w = p[name + ".weight"]
    if cfg["norm"] == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), w, p.get(name + ".bias"), cfg["norm_eps"])
    # HF LlamaRMSNorm.
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["norm_eps"]) * w


def linear(p, name, x):
    return F.linear(x, p[name + ".weight"], p.get(name + ".bias"))


def rope_tables(cfg):
    """HF Llama rotary tables: cos/sin of (context_length, D), frequencies over both halves."""
    d = cfg["n_embd"] // cfg["n_head"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    freqs = torch.outer(torch.arange(cfg["context_length"], dtype=torch.float64), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().float().to(DEVICE), emb.sin().float().to(DEVICE)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Model:
    """chatforge's pre-norm decoder in PyTorch. A cache is a list of per-layer (k, v) or None."""

    def __init__(self, cfg, params):
        self.cfg = cfg
        self.p = params
        self.rope = rope_tables(cfg) if cfg["positions"] == "rope" else None

    def attention(self, name, x, offset, cache, layer):
        cfg, p = self.cfg, self.p
        b, t, c = x.shape
        h, hkv = cfg["n_head"], cfg["n_kv_head"]
        d = c // h
        q = linear(p, name + ".q_proj", x).view(b, t, h, d).transpose(1, 2)  # (B, H, T, D)
        k = linear(p, name + ".k_proj", x).view(b, t, hkv, d).transpose(1, 2)  # (B, Hkv, T, D)
        v = linear(p, name + ".v_proj", x).view(b, t, hkv, d).transpose(1, 2)
        if self.rope is not None:
            cos = self.rope[0][offset : offset + t].to(q.dtype)
            sin = self.rope[1][offset : offset + t].to(q.dtype)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if cache[layer] is not None:
                pk, pv = cache[layer]
                k = torch.cat([pk, k], dim=2)  # (B, Hkv, S, D)
                v = torch.cat([pv, v], dim=2)
            cache[layer] = (k, v)
        if hkv != h:
            k = k.repeat_interleave(h // hkv, dim=1)
            v = v.repeat_interleave(h // hkv, dim=1)
        s = k.shape[2]
        if t == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one new token sees everything
        elif s == t:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # several new tokens after a cached prefix
            mask = torch.ones(t, s, dtype=torch.bool, device=DEVICE).tril(diagonal=s - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C)
        return linear(p, name + ".o_proj", y)

    def mlp(self, name, x):
        p = self.p
        if self.cfg["mlp"] == "gelu":
            return linear(p, name + ".proj", F.gelu(linear(p, name + ".fc", x), approximate="tanh"))
        gate = F.silu(linear(p, name + ".gate_proj", x))
        return linear(p, name + ".down_proj", gate * linear(p, name + ".up_proj", x))

    def forward(self, ids, cache=None):
        """Logits (B, T, V); with a cache, positions continue after the cached ones."""
        cfg, p = self.cfg, self.p
        b, t = ids.shape
        offset = 0
        if cache is not None and cache[0] is not None:
            offset = cache[0][0].shape[2]
        x = p["wte.weight"][ids]
        if cfg["positions"] == "learned":
            x = x + p["wpe.weight"][offset : offset + t]
        for i in range(cfg["n_layer"]):
            blk = f"blocks.{i}"
            x = x + self.attention(blk + ".attn", norm(cfg, p, blk + ".ln_1", x), offset, cache, i)
            x = x + self.mlp(blk + ".mlp", norm(cfg, p, blk + ".ln_2", x))
        x = norm(cfg, p, "ln_f", x)
        head = p["wte.weight"] if cfg["tie_embeddings"] else p["lm_head.weight"]
        return F.linear(x, head)

    def new_cache(self):
        return [None] * self.cfg["n_layer"]


# ---------------------------------------------------------------------------------------------
# Measurements


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def memory():
    out = {"peak_rss_bytes": peak_rss_bytes(), "rss_bytes": rss_bytes()}
    if DEVICE.type == "cuda":
        out["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(DEVICE)
    return out


def rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if s else None


class Trainer:
    """One model, one AdamW; f32 and bf16-autocast steps update the same f32 weights."""

    def __init__(self, cfg, tensors):
        self.params = {k: v.to(DEVICE).requires_grad_(True) for k, v in tensors.items()}
        self.model = Model(cfg, self.params)
        self.vocab = cfg["vocab_size"]
        decay = [v for v in self.params.values() if v.ndim >= 2]
        no_decay = [v for v in self.params.values() if v.ndim < 2]
        self.opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": WEIGHT_DECAY},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=LR,
            betas=BETAS,
            eps=EPS,
        )
        self.x = self.y = None

    def set_batch(self, x, y):
        self.x = torch.tensor(x, dtype=torch.long, device=DEVICE)
        self.y = torch.tensor(y, dtype=torch.long, device=DEVICE)

    def step(self, dtype):
        """One timed optimizer step on the current batch: (seconds, loss)."""
        if dtype not in ("f32", "bf16"):
            raise ValueError(f"dtype must be f32 or bf16, got {dtype}")
        sync()
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = self.model.forward(self.x)
            loss = F.cross_entropy(logits.reshape(-1, self.vocab), self.y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), GRAD_CLIP)
        self.opt.step()
        value = loss.item()
        sync()
        return time.perf_counter() - t0, value


class Generator:
    """Inference over detached weights."""

    def __init__(self, cfg, tensors):
        self.model = Model(cfg, {k: v.detach().to(DEVICE) for k, v in tensors.items()})

    @torch.inference_mode()
    def prefill(self, ids):
        """One forward pass of B prompts with an empty cache: (seconds, greedy next ids)."""
        ids = torch.tensor(ids, dtype=torch.long, device=DEVICE)
        sync()
        t0 = time.perf_counter()
        cache = self.model.new_cache()
        logits = self.model.forward(ids, cache)
        nxt = logits[:, -1].argmax(-1)
        sync()
        return time.perf_counter() - t0, nxt.tolist()

    @torch.inference_mode()
    def decode(self, prompt, batch, new_tokens):
        """Prefill `prompt` with batch 1, copy the cache to `batch` rows and pick the first token,
        then greedy-decode until each row has `new_tokens` tokens (N - 1 decode steps). The
        decode time starts when the first token is picked, as chatforge's (its engine's first
        token callback). Returns (decode seconds, seconds to the first token, steps, row 0)."""
        prompt = torch.tensor([prompt], dtype=torch.long, device=DEVICE)
        sync()
        t0 = time.perf_counter()
        cache = self.model.new_cache()
        logits = self.model.forward(prompt, cache)[:, -1]
        cache = [(k.repeat(batch, 1, 1, 1), v.repeat(batch, 1, 1, 1)) for k, v in cache]
        nxt = logits.argmax(-1).repeat(batch)  # (B,)
        sync()
        t1 = time.perf_counter()
        tokens = [nxt]
        for _ in range(new_tokens - 1):
            logits = self.model.forward(nxt.view(batch, 1), cache)[:, -1]  # (B, V)
            nxt = logits.argmax(-1)
            tokens.append(nxt)
        sync()
        t2 = time.perf_counter()
        row0 = [int(t[0]) for t in tokens]
        return t2 - t1, t1 - t0, new_tokens - 1, row0


def matmul_gflops(n, repeats):
    """Median GFLOP/s of an n x n x n f32 GEMM (2 n^3 flops), after one warm-up."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(DEVICE)
    b = torch.randn(n, n, generator=g).to(DEVICE)
    a @ b
    times = []
    for _ in range(max(repeats, 1)):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t0)
    t = median(times)
    return 2.0 * n**3 / t / 1e9, t


# ---------------------------------------------------------------------------------------------
# Front ends


def serve(args, cfg, tensors, info):
    trainer = Trainer(cfg, tensors) if args.mode == "train" else None
    gen = Generator(cfg, tensors) if args.mode == "generate" else None
    info["ready"] = True
    info["rss_after_setup_bytes"] = rss_bytes()
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "quit":
                break
            if cmd == "set_batch" and trainer is not None:
                trainer.set_batch(msg["x"], msg["y"])
                out = {"ok": True}
            elif cmd == "train_step" and trainer is not None:
                if trainer.x is None:
                    raise ValueError("train_step before set_batch")
                secs, loss = trainer.step(msg.get("dtype", "f32"))
                out = {"seconds": secs, "loss": loss}
            elif cmd == "prefill" and gen is not None:
                secs, nxt = gen.prefill(msg["ids"])
                out = {"seconds": secs, "next": nxt}
            elif cmd == "decode" and gen is not None:
                secs, pre, steps, row0 = gen.decode(msg["prompt"], msg["batch"], msg["new_tokens"])
                out = {"seconds": secs, "first_token_seconds": pre, "steps": steps, "tokens": row0}
            elif cmd == "matmul":
                gflops, secs = matmul_gflops(msg.get("n", 2048), msg.get("repeats", 5))
                out = {"gflops": gflops, "seconds": secs}
            elif cmd == "memory":
                out = memory()
            else:
                raise ValueError(f"unknown command {cmd!r} in mode {args.mode}")
        except Exception as e:  # report and keep serving: the caller decides
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


def standalone_train(args, cfg, tensors, info):
    g = torch.Generator().manual_seed(args.seed)
    t = cfg["context_length"]
    ids = torch.randint(0, cfg["vocab_size"], (args.batch, t + 1), generator=g)
    trainer = Trainer(cfg, tensors)
    trainer.set_batch(ids[:, :-1].tolist(), ids[:, 1:].tolist())
    info.update(batch=args.batch, context_length=t, tokens_per_step=args.batch * t)
    for dtype in args.dtypes.split(","):
        losses, times = [], []
        for i in range(args.warmup + args.steps):
            secs, loss = trainer.step(dtype)
            losses.append(loss)
            if i >= args.warmup:
                times.append(secs)
        step = median(times)
        info[dtype] = {
            "step_seconds_median": step,
            "step_seconds": times,
            "tokens_per_second": args.batch * t / step if step else None,
            "losses": losses,
            "peak_rss_bytes_so_far": peak_rss_bytes(),
        }
    info.update(memory())


def standalone_generate(args, cfg, tensors, info):
    g = torch.Generator().manual_seed(args.seed)
    p, n = args.prompt_tokens, args.new_tokens
    if p + n > cfg["context_length"]:
        raise SystemExit(f"prompt {p} + new tokens {n} exceed the context {cfg['context_length']}")
    gen = Generator(cfg, tensors)
    batches = [int(b) for b in args.batches.split(",")]
    prompts = torch.randint(0, cfg["vocab_size"], (max(batches), p), generator=g).tolist()
    info.update(prompt_tokens=p, new_tokens=n, decode_steps=n - 1)
    for b in batches:
        pre, dec = [], []
        for i in range(args.warmup + args.repeats):
            s_pre, _ = gen.prefill(prompts[:b])
            s_dec, _, steps, _ = gen.decode(prompts[0], b, n)
            if i >= args.warmup:
                pre.append(s_pre)
                dec.append(s_dec)
        info[f"batch_{b}"] = {
            "prefill_seconds_median": median(pre),
            "prefill_tokens_per_second": b * p / median(pre),
            "decode_seconds_median": median(dec),
            "decode_tokens_per_second": b * (n - 1) / median(dec),
        }
    info.update(memory())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="directory with config.json + model.safetensors")
    ap.add_argument("--mode", required=True, choices=["train", "generate"])
    ap.add_argument("--serve", action="store_true", help="answer JSON commands on stdin")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random ids")
    ap.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    ap.add_argument("--matmul", type=int, default=2048, help="GEMM ceiling size (0: skip)")
    # train
    ap.add_argument("--batch", type=int, default=8, help="train: rows per step")
    ap.add_argument("--steps", type=int, default=5, help="train: timed steps per dtype")
    ap.add_argument("--dtypes", default="f32,bf16", help="train: f32 and/or bf16 (autocast)")
    # generate
    ap.add_argument("--prompt-tokens", type=int, default=64, help="generate: prompt length P")
    ap.add_argument("--new-tokens", type=int, default=100, help="generate: tokens per row N")
    ap.add_argument("--batches", default="1,8", help="generate: batch sizes")
    ap.add_argument("--repeats", type=int, default=3, help="generate: timed repetitions")
    args = ap.parse_args()

    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: this torch sees no CUDA device")
        torch.cuda.set_device(DEVICE)
        # f32 means f32: no TF32 tensor-core products (chatforge's cuBLAS calls use none).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    torch.set_num_threads(args.threads)
    cfg, tensors = load_model_dir(args.model)
    info = {
        "mode": args.mode,
        "torch_version": torch.__version__,
        "device": str(DEVICE)
        + (f" ({torch.cuda.get_device_name(DEVICE)})" if DEVICE.type == "cuda" else ""),
        "threads": torch.get_num_threads(),
        "params": sum(v.numel() for v in tensors.values()),
        "attention": "F.scaled_dot_product_attention",
        "optimizer": "torch.optim.AdamW (default implementation), clip_grad_norm_(1.0)",
    }
    if args.serve:
        serve(args, cfg, tensors, info)
        return
    if args.matmul > 0:
        gflops, _ = matmul_gflops(args.matmul, 5)
        info["matmul"] = {"n": args.matmul, "gflops": gflops}
    if args.mode == "train":
        standalone_train(args, cfg, tensors, info)
    else:
        standalone_generate(args, cfg, tensors, info)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
