"""Training throughput of a model preset in plain PyTorch, the reference for `fucina bench train`.

Hugging Face `LlamaForCausalLM` with the shape of a fucina model TOML (configs/models/*.toml),
trained as fucina's bench trains it: float32, eager (no torch.compile), SDPA attention, batches
of 8 × 256 tokens, next-token cross-entropy averaged over the batch, global gradient-norm
clipping at 1.0, AdamW (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only)
with a cosine learning rate. Tokens are random (fixed seed): the cost does not depend on them.

Prints one line, parsed by scripts/bench-pytorch.sh:
  bench pytorch: ... median N tokens/s over S steps (min A, max B), peak RSS M MiB, ...

Run through scripts/bench-pytorch.sh, which pins the versions and sets the thread variables.
"""

import argparse
import math
import os
import resource
import sys
import time
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

BATCH, SEQ = 8, 256
MODEL_KEYS = {
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "tie_word_embeddings",
}


def load_model_config(path):
    try:
        shape = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        sys.exit(f"bench_pytorch: cannot read model config {path}: {e}")
    unknown = sorted(set(shape) - MODEL_KEYS)
    if unknown:
        # A key this script does not pass on would make the two sides train different models.
        sys.exit(f"bench_pytorch: {path}: keys {unknown} are not mapped to LlamaConfig here")
    missing = sorted(MODEL_KEYS - set(shape))
    if missing:
        sys.exit(f"bench_pytorch: {path}: missing keys {missing}")
    if shape["max_position_embeddings"] < SEQ:
        sys.exit(f"bench_pytorch: {path}: max_position_embeddings must be at least {SEQ}")
    return LlamaConfig(**shape, attention_bias=False, mlp_bias=False, attention_dropout=0.0)


def rss_mib(field):
    """A memory field of /proc/self/status in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cosine_lr(lr, step, total):
    # fucina's schedule with no warm-up and min_lr 0: a pure function of the step.
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a fucina model TOML")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--steps", type=int, default=10, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first, not measured")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if args.threads < 1 or args.steps < 1 or args.warmup < 0:
        sys.exit("bench_pytorch: --threads and --steps must be positive, --warmup ≥ 0")

    # What the interpreter, torch and transformers hold before any model exists.
    baseline = rss_mib("VmRSS")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = load_model_config(args.model)
    model = LlamaForCausalLM._from_config(
        config, attn_implementation="sdpa", dtype=torch.float32
    )
    model.train()
    attn = model.config._attn_implementation
    if attn != "sdpa":
        sys.exit(f"bench_pytorch: transformers chose attention {attn!r}, not 'sdpa'")
    params = sum(p.numel() for p in model.parameters())

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 0.1},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    vocab = config.vocab_size
    total = args.warmup + args.steps
    data = torch.Generator().manual_seed(args.seed)
    rates, losses = [], []
    for step in range(total):
        started = time.perf_counter()
        rows = torch.randint(0, vocab, (BATCH, SEQ + 1), generator=data)
        inputs, targets = rows[:, :-1], rows[:, 1:]
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args.lr, step, total)
        logits = model(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds = time.perf_counter() - started
        if step >= args.warmup:
            rates.append(BATCH * SEQ / seconds)

    median = sorted(rates)[len(rates) // 2]  # the upper median, as fucina's bench takes it
    # ru_maxrss is KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)
    after_imports = "unknown" if baseline is None else f"{baseline:.0f} MiB"
    env = ",".join(f"{k}={os.environ.get(k, '-')}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    print(
        f"bench pytorch: torch {torch.__version__}, LlamaForCausalLM ({params} parameters, "
        f"{params / 1e6:.1f}M), attention {attn}, {torch.get_num_threads()} thread(s) ({env}), "
        f"batch {BATCH}×{SEQ} tokens: median {median:.0f} tokens/s over "
        f"{len(rates)} steps (min {min(rates):.0f}, max {max(rates):.0f}), "
        f"peak RSS {peak_mib:.0f} MiB ({after_imports} after imports), "
        f"loss {losses[0]:.3f} → {losses[-1]:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
