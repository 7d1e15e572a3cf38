#!/usr/bin/env python3
"""Whole-model parity fixtures for chatforge-model (TESTING.md family 2, llm.c test_gpt2.c style).

Builds the chatforge transformer independently in plain PyTorch, in both styles the Rust model
supports, with a fixed seed, runs one forward/backward on a fixed batch and then 10 AdamW steps,
and writes for each style:

    crates/model/tests/fixtures/<name>.safetensors
        every parameter under chatforge's name (e.g. `blocks.0.attn.q_proj.weight`, float32),
        `x` (B, T) int64 input ids, `y` (B, T) int64 targets (-1 = ignored, i.e. IGNORE_INDEX),
        `logits` (B, T, V) float32, `loss` () float32,
        `grad.<name>` for every parameter (gradient of the mean loss at the initial weights).
    crates/model/tests/fixtures/<name>.json
        `config` (chatforge's GptConfig JSON), the batch description, `loss`, the AdamW
        hyperparameters, and `losses_10`: the loss before each of 10 AdamW updates on the same batch.

Styles:
    gpt2_tiny   LayerNorm + learned positions + GELU(tanh) MLP + biases + tied embeddings
    llama_tiny  RMSNorm + RoPE (HF rotate_half) + SwiGLU + grouped-query attention (4 q heads over
                2 kv heads) + untied LM head + no biases

The initial weights are *not* GPT-2's N(0, 0.02) scheme: that leaves activations so small that the
model is nearly linear and the logits nearly uniform, which would hide bugs. Instead every matrix is
N(0, 1/fan_in) (unit-scale activations, attention far from uniform), embeddings and the LM head
N(0, 0.3^2), norm weights 1 + N(0, 0.1^2) and biases N(0, 0.1^2), so every op, bias and norm
parameter visibly matters.

AdamW: torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.95), eps=1e-8), weight_decay=0.1 on parameters with
ndim >= 2 only (two param groups), no gradient clipping, the same batch every step, float32.

Run from the repository root (deterministic; rerun only when the model's definition changes):

    python3 scripts/reference/gpt_fixture.py

Needs torch (tested with 2.15) and safetensors.
"""

import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT_DIR = os.path.join("crates", "model", "tests", "fixtures")
B, T = 2, 16
IGNORE = -1
ADAMW = {
    "lr": 1e-3,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "weight_decay_applies_to": "parameters with ndim >= 2",
    "grad_clip": None,
    "steps": 10,
}

BASE = {
    "vocab_size": 64,
    "context_length": 16,
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 32,
    "norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
CONFIGS = {
    "gpt2_tiny": dict(
        BASE,
        n_kv_head=4,
        intermediate_size=64,
        norm="layernorm",
        positions="learned",
        mlp="gelu",
        tie_embeddings=True,
        bias=True,
    ),
    "llama_tiny": dict(
        BASE,
        n_kv_head=2,
        intermediate_size=48,
        norm="rmsnorm",
        positions="rope",
        mlp="swiglu",
        tie_embeddings=False,
        bias=False,
    ),
}
SEEDS = {"gpt2_tiny": 1234, "llama_tiny": 5678}


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
    return dict(sorted(s.items()))


def init_params(cfg, gen):
    """The fixture's initial weights (see the module docstring), drawn in sorted name order."""
    params = {}
    for name, shape in param_shapes(cfg).items():
        z = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name in ("wte.weight", "wpe.weight", "lm_head.weight"):
            t = 0.3 * z
        elif name.endswith(".bias"):
            t = 0.1 * z
        elif len(shape) == 1:  # norm weight
            t = 1.0 + 0.1 * z
        else:
            t = z / math.sqrt(shape[1])
        params[name] = t.requires_grad_(True)
    return params


def norm(cfg, p, name, x):
    w = p[name + ".weight"]
    if cfg["norm"] == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), w, p.get(name + ".bias"), cfg["norm_eps"])
    # HF LlamaRMSNorm.
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["norm_eps"]) * w


def linear(p, name, x):
    return F.linear(x, p[name + ".weight"], p.get(name + ".bias"))


def rope_tables(cfg, t):
    """HF Llama rotary tables: cos/sin of (T, D) with frequencies repeated over both halves."""
    d = cfg["n_embd"] // cfg["n_head"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    freqs = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().float(), emb.sin().float()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def attention(cfg, p, name, x):
    b, t, c = x.shape
    h, hkv = cfg["n_head"], cfg["n_kv_head"]
    d = c // h
    q = linear(p, name + ".q_proj", x).view(b, t, h, d).transpose(1, 2)
    k = linear(p, name + ".k_proj", x).view(b, t, hkv, d).transpose(1, 2)
    v = linear(p, name + ".v_proj", x).view(b, t, hkv, d).transpose(1, 2)
    if cfg["positions"] == "rope":
        cos, sin = rope_tables(cfg, t)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(h // hkv, dim=1)
    v = v.repeat_interleave(h // hkv, dim=1)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(d)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
    y = (att @ v).transpose(1, 2).reshape(b, t, c)
    return linear(p, name + ".o_proj", y)


def mlp(cfg, p, name, x):
    if cfg["mlp"] == "gelu":
        return linear(p, name + ".proj", F.gelu(linear(p, name + ".fc", x), approximate="tanh"))
    gate = F.silu(linear(p, name + ".gate_proj", x))
    return linear(p, name + ".down_proj", gate * linear(p, name + ".up_proj", x))


def forward(cfg, p, ids):
    """Logits (B, T, V) of the pre-norm decoder."""
    b, t = ids.shape
    x = p["wte.weight"][ids]
    if cfg["positions"] == "learned":
        x = x + p["wpe.weight"][:t]
    for i in range(cfg["n_layer"]):
        blk = f"blocks.{i}"
        x = x + attention(cfg, p, blk + ".attn", norm(cfg, p, blk + ".ln_1", x))
        x = x + mlp(cfg, p, blk + ".mlp", norm(cfg, p, blk + ".ln_2", x))
    x = norm(cfg, p, "ln_f", x)
    head = p["wte.weight"] if cfg["tie_embeddings"] else p["lm_head.weight"]
    return x @ head.t()


def loss_fn(logits, y):
    v = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, v), y.reshape(-1), ignore_index=IGNORE)


def make_fixture(name, cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    params = init_params(cfg, gen)
    x = torch.randint(0, cfg["vocab_size"], (B, T), generator=gen)
    y = torch.randint(0, cfg["vocab_size"], (B, T), generator=gen)
    y[0, 3] = IGNORE  # exercise the ignored-target path
    y[1, 10] = IGNORE

    logits = forward(cfg, params, x)
    loss = loss_fn(logits, y)
    loss.backward()
    out = {k: v.detach().clone() for k, v in params.items()}
    out["x"] = x.to(torch.int64)
    out["y"] = y.to(torch.int64)
    out["logits"] = logits.detach().clone()
    out["loss"] = loss.detach().clone().reshape(())
    for k, v in params.items():
        assert v.grad is not None and torch.isfinite(v.grad).all(), k
        out["grad." + k] = v.grad.detach().clone()

    # 10 AdamW steps from the same initial weights, same batch every step.
    train = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    decay = [v for v in train.values() if v.ndim >= 2]
    no_decay = [v for v in train.values() if v.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": ADAMW["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=ADAMW["lr"],
        betas=(ADAMW["beta1"], ADAMW["beta2"]),
        eps=ADAMW["eps"],
    )
    losses = []
    for _ in range(ADAMW["steps"]):
        opt.zero_grad()
        step_loss = loss_fn(forward(cfg, train, x), y)
        step_loss.backward()
        losses.append(step_loss.item())
        opt.step()
    assert abs(losses[0] - loss.item()) < 1e-6, (losses[0], loss.item())

    os.makedirs(OUT_DIR, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT_DIR, name + ".safetensors"))
    meta = {
        "generated_by": "scripts/reference/gpt_fixture.py",
        "torch_version": torch.__version__,
        "seed": seed,
        "config": cfg,
        "batch": {"B": B, "T": T, "ignored_target": IGNORE},
        "loss": loss.item(),
        "adamw": ADAMW,
        "decayed_params": sorted(k for k, v in train.items() if v.ndim >= 2),
        "losses_10": losses,
    }
    with open(os.path.join(OUT_DIR, name + ".json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{name}: loss {loss.item():.6f}, losses_10 {losses[0]:.4f} -> {losses[-1]:.4f}")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for name, cfg in CONFIGS.items():
        make_fixture(name, cfg, SEEDS[name])


if __name__ == "__main__":
    main()
