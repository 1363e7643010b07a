"""PyTorch's side of scripts/gpu-check.sh: the same model, attention and matmul as fucina's
`bench train`, `bench attention` and `bench matmul`, timed the same way, on the GPU (or the CPU
in a dry run). Installs nothing: it uses the torch (and, when present, transformers) already on
the machine. Writes one JSON object to --json.

train:     HF LlamaForCausalLM (a plain PyTorch Llama when transformers is absent) with the
           shape of a fucina model TOML; f32 weights under bf16 autocast (fucina's
           precision = "bf16"), SDPA attention, fused AdamW, random tokens; median tokens/s of
           the steps after the first two, and the peak memory torch reserved.
attention: F.scaled_dot_product_attention(is_causal=True) with grouped kv heads, forward and
           forward+backward; FLOPs as fucina counts them (causal forward 2·b·h·s²·d, backward
           2.5× the forward).
matmul:    an n×n by n×n matmul, 2n³ FLOPs.
"""

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(iters, op):
    for _ in range(2):
        op()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        op()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


class PlainLlama(torch.nn.Module):
    """Llama in plain PyTorch, for machines without transformers: RMSNorm, RoPE, GQA through
    SDPA, SwiGLU; the parameter count and FLOPs of LlamaForCausalLM of the same shape."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        h, hd = c["hidden_size"], c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        self.hd = hd
        nh, nkv, ff = c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
        self.embed = torch.nn.Embedding(c["vocab_size"], h)
        self.layers = torch.nn.ModuleList()
        for _ in range(c["num_hidden_layers"]):
            layer = torch.nn.Module()
            layer.n1, layer.n2 = torch.nn.RMSNorm(h, eps=c["rms_norm_eps"]), torch.nn.RMSNorm(h, eps=c["rms_norm_eps"])
            layer.q = torch.nn.Linear(h, nh * hd, bias=False)
            layer.kv = torch.nn.Linear(h, 2 * nkv * hd, bias=False)
            layer.o = torch.nn.Linear(nh * hd, h, bias=False)
            layer.gate_up = torch.nn.Linear(h, 2 * ff, bias=False)
            layer.down = torch.nn.Linear(ff, h, bias=False)
            self.layers.append(layer)
        self.norm = torch.nn.RMSNorm(h, eps=c["rms_norm_eps"])
        self.head = None if c["tie_word_embeddings"] else torch.nn.Linear(h, c["vocab_size"], bias=False)

    def rope(self, x, seq):
        inv = 1.0 / (self.c["rope_theta"] ** (torch.arange(0, self.hd, 2, device=x.device) / self.hd))
        angles = torch.outer(torch.arange(seq, device=x.device), inv)
        cos, sin = angles.cos()[None, None], angles.sin()[None, None]
        a, b = x[..., : self.hd // 2], x[..., self.hd // 2 :]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1).to(x.dtype)

    def forward(self, tokens):
        c, (batch, seq) = self.c, tokens.shape
        nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
        x = self.embed(tokens)
        for l in self.layers:
            y = l.n1(x)
            q = l.q(y).view(batch, seq, nh, self.hd).transpose(1, 2)
            k, v = l.kv(y).view(batch, seq, 2, nkv, self.hd).permute(2, 0, 3, 1, 4)
            q, k = self.rope(q, seq), self.rope(k, seq)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=nh != nkv)
            x = x + l.o(a.transpose(1, 2).reshape(batch, seq, nh * self.hd))
            gate, up = l.gate_up(l.n2(x)).chunk(2, dim=-1)
            x = x + l.down(F.silu(gate) * up)
        x = self.norm(x)
        return x @ self.embed.weight.T if self.head is None else self.head(x)


def build_model(shape, dev):
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return PlainLlama(shape).to(dev), "plain PyTorch Llama"
    config = LlamaConfig(**shape, attention_bias=False, mlp_bias=False, attention_dropout=0.0)
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.to(dev), "transformers LlamaForCausalLM"


def train(args):
    dev = device()
    shape = tomllib.loads(Path(args.model).read_text())
    torch.manual_seed(0)
    model, kind = build_model(shape, dev)
    params = sum(p.numel() for p in model.parameters())
    fused = dev.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
    step_fn = model
    if args.compile:
        step_fn = torch.compile(model)
    vocab = shape["vocab_size"]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rates, losses = [], []
    for step in range(args.steps):
        tokens = torch.randint(0, vocab, (args.micro_batch, args.seq_len + 1), device=dev)
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=DTYPES[args.precision], enabled=args.precision != "f32"):
            out = step_fn(tokens[:, :-1])
            logits = out.logits if hasattr(out, "logits") else out
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        sync()
        if step >= 2:
            rates.append(args.micro_batch * args.seq_len / (time.perf_counter() - start))
    rates.sort()
    peak = torch.cuda.max_memory_reserved() if torch.cuda.is_available() else None
    return {
        "model": kind,
        "compiled": args.compile,
        "parameters": params,
        "precision": args.precision,
        "micro_batch": args.micro_batch,
        "seq_len": args.seq_len,
        "tokens_per_sec": rates[len(rates) // 2],
        "losses": losses,
        "peak_reserved_bytes": peak,
    }


def attention(args):
    dev, dtype = device(), DTYPES[args.precision]
    b, s, h, kv, d = args.batch, args.seq, args.heads, args.kv_heads, args.head_dim
    q = torch.randn(b, h, s, d, device=dev, dtype=dtype, requires_grad=True)
    k = torch.randn(b, kv, s, d, device=dev, dtype=dtype, requires_grad=True)
    v = torch.randn(b, kv, s, d, device=dev, dtype=dtype, requires_grad=True)
    dy = torch.randn(b, h, s, d, device=dev, dtype=dtype)
    gqa = h != kv

    def forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)

    def both():
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        y.backward(dy)

    flops = 2.0 * b * h * s * s * d
    fwd, total = timed(args.iters, forward), timed(args.iters, both)
    return {
        "precision": args.precision, "batch": b, "seq": s, "heads": h, "kv_heads": kv, "head_dim": d,
        "forward_ms": fwd * 1e3, "forward_backward_ms": total * 1e3,
        "forward_tflops": flops / fwd / 1e12, "forward_backward_tflops": 3.5 * flops / total / 1e12,
    }


def matmul(args):
    dev, dtype, n = device(), DTYPES[args.precision], args.size
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    seconds = timed(args.iters, lambda: a @ b)
    return {"precision": args.precision, "size": n, "ms": seconds * 1e3, "tflops": 2.0 * n**3 / seconds / 1e12}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True, help="a fucina model TOML")
    t.add_argument("--seq-len", type=int, required=True)
    t.add_argument("--micro-batch", type=int, required=True)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--precision", default="bf16", choices=DTYPES)
    t.add_argument("--compile", action="store_true")
    a = sub.add_parser("attention")
    for name, default in [("batch", 1), ("seq", 2048), ("heads", 32), ("kv-heads", 8), ("head-dim", 64), ("iters", 5)]:
        a.add_argument(f"--{name}", type=int, default=default)
    a.add_argument("--precision", default="bf16", choices=DTYPES)
    m = sub.add_parser("matmul")
    m.add_argument("--size", type=int, default=8192)
    m.add_argument("--iters", type=int, default=5)
    m.add_argument("--precision", default="bf16", choices=DTYPES)
    for p in (t, a, m):
        p.add_argument("--json", required=True)
    args = parser.parse_args()
    if getattr(args, "steps", 3) < 3:
        sys.exit("gpu_check_torch: --steps must be at least 3 (two are warm-up)")
    result = {"train": train, "attention": attention, "matmul": matmul}[args.what](args)
    result["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result["torch"] = torch.__version__
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    # One line for the log, its figures last (gpu-check.sh shows the end of it).
    figures = {k: v for k, v in result.items() if k in ("model", "tokens_per_sec", "forward_backward_tflops", "tflops")}
    print(f"torch {args.what} on {result['device']}: " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
