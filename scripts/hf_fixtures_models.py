"""Tiny random Hugging Face checkpoints plus transformers' own logits/loss on them.

Each fixture directory is what `save_pretrained` writes, so fucina's importer is
tested against the real on-disk layout (sharding, bf16/f16, tied embeddings,
`rope_parameters`), and `reference.safetensors` holds what transformers computes
from exactly those bytes.
"""

import json
import math
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from hf_fixtures_common import versions, write_json

VOCAB = 256
BATCH, SEQ = 2, 24
TOKEN_SEED = 1234

# Each fixture exercises one thing a wrong importer gets silently wrong.
SPECS = [
    {
        "name": "llama-gqa",
        "seed": 11,
        "model": LlamaForCausalLM,
        "config": lambda: LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=10000.0,
            max_position_embeddings=64,
            initializer_range=0.2,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        "disk_dtype": torch.float32,
        # ~480 kB of f32 weights: 200 kB shards give an index and three files.
        "max_shard_size": "200KB",
    },
    {
        "name": "mistral",
        "seed": 22,
        "model": MistralForCausalLM,
        "config": lambda: MistralConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            # head_dim * heads = 128 != hidden 64: q/o are not square.
            head_dim=32,
            rope_theta=10000.0,
            max_position_embeddings=64,
            sliding_window=None,
            initializer_range=0.2,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        "disk_dtype": torch.bfloat16,
        "max_shard_size": "50GB",
    },
    {
        "name": "llama3-tied",
        "seed": 33,
        "model": LlamaForCausalLM,
        "config": lambda: LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            rope_theta=500000.0,
            # original_max_position_embeddings 64 (not 16): at head_dim 16 and
            # theta 5e5 the shortest wavelength is 2*pi, so with 16 the
            # high-frequency cut (16/4 = 4) would leave no band unscaled.
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            max_position_embeddings=512,
            initializer_range=0.2,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
        ),
        "disk_dtype": torch.float16,
        "max_shard_size": "50GB",
    },
]


def reference_tokens():
    g = torch.Generator().manual_seed(TOKEN_SEED)
    return torch.randint(0, VOCAB, (BATCH, SEQ), generator=g, dtype=torch.int64)


def build_model(spec):
    torch.manual_seed(spec["seed"])
    model = spec["model"](spec["config"]())
    # HF initialises RMSNorm weights to 1, which would hide a norm weight that
    # is dropped or swapped on import; make every norm distinct.
    g = torch.Generator().manual_seed(spec["seed"] + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def forward(model, tokens):
    with torch.no_grad():
        out = model(tokens, labels=tokens)
    return out.logits.float(), out.loss.float().reshape(1)


def load_f32(path):
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def llama3_bands(config):
    """Which inverse frequencies llama3 scaling leaves, smooths and scales."""
    rp = config.rope_parameters
    head_dim = config.head_dim
    inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    wavelen = 2 * math.pi / inv
    old = rp["original_max_position_embeddings"]
    high = old / rp["high_freq_factor"]
    low = old / rp["low_freq_factor"]
    unscaled = int((wavelen < high).sum())
    scaled = int((wavelen > low).sum())
    return {"unscaled": unscaled, "smoothed": len(inv) - unscaled - scaled, "scaled": scaled}


def v4_config(cfg):
    """The same config in the transformers 4.x layout most hub checkpoints use
    (top-level rope_theta, rope_scaling, torch_dtype)."""
    out = {}
    for k, v in cfg.items():
        if k == "rope_parameters":
            rp = dict(v)
            out["rope_theta"] = rp.pop("rope_theta")
            out["rope_scaling"] = None if rp.get("rope_type") == "default" else rp
        elif k == "dtype":
            out["torch_dtype"] = v
        else:
            out[k] = v
    return dict(sorted(out.items()))


def assert_close(a, b, what, tol=1e-5):
    diff = (a - b).abs().max().item()
    if diff > tol:
        raise SystemExit(f"sanity check failed: {what}: max abs diff {diff:.3g} > {tol}")
    return diff


def summary(logits, loss):
    return {
        "logits_min": round(logits.min().item(), 4),
        "logits_max": round(logits.max().item(), 4),
        "logits_abs_mean": round(logits.abs().mean().item(), 4),
        "logits_std": round(logits.std().item(), 4),
        "loss": round(loss.item(), 6),
    }


def generate_one(spec, out_root, command):
    out = out_root / spec["name"]
    if out.exists():
        shutil.rmtree(out)
    tokens = reference_tokens()

    model = build_model(spec).to(spec["disk_dtype"])
    model.save_pretrained(out, max_shard_size=spec["max_shard_size"])

    ref = load_f32(out)
    logits, loss = forward(ref, tokens)

    # The reload must hold exactly the weights that were saved (no silent
    # re-init of a tensor the loader missed). Weights, not logits: the
    # in-memory model's rotary buffer was rounded by the cast to the disk dtype.
    saved = model.state_dict()
    for k, v in ref.state_dict().items():
        if k not in saved or not torch.equal(saved[k].float(), v):
            raise SystemExit(f"sanity check failed: {spec['name']}: {k} differs after reload")
    again, again_loss = forward(load_f32(out), tokens)
    assert_close(logits, again, f"{spec['name']}: second reload", tol=0.0)

    checks = check_layout(spec, out, ref)

    cfg = json.loads((out / "config.json").read_text())
    write_json(out / "config.v4.json", v4_config(cfg))
    checks["config_v4_layout_logits_max_abs_diff"] = check_v4_layout(out, tokens, logits)

    save_file(
        {"tokens": tokens.contiguous(), "logits": logits.contiguous(), "loss": loss.contiguous()},
        str(out / "reference.safetensors"),
        metadata={"producer": "scripts/hf_fixtures.py"},
    )
    meta = {
        "command": command,
        "versions": versions(),
        "model_class": spec["model"].__name__,
        "disk_dtype": str(spec["disk_dtype"]).removeprefix("torch."),
        "seed": spec["seed"],
        "token_seed": TOKEN_SEED,
        "reference": "logits/loss from AutoModelForCausalLM.from_pretrained(dir, dtype=float32, "
        "attn_implementation='eager') on `tokens`; loss = model(tokens, labels=tokens).loss "
        "(positions 0..22 predict 1..23, mean)",
        "norm_weights": "RMSNorm weights randomised to 1 + 0.3*N(0,1) so a dropped norm shows",
        "config_v4": "config.v4.json is config.json rewritten in the transformers 4.x layout "
        "(rope_theta/rope_scaling/torch_dtype); transformers loads it to identical logits",
        "summary": summary(logits, loss),
        "checks": checks,
    }
    write_json(out / "meta.json", meta)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"  {spec['name']}: {size / 1024:.0f} KiB, {meta['summary']}, {checks}")
    if size >= 1024 * 1024:
        raise SystemExit(f"{out} is {size} bytes; fixtures must stay under 1 MB")
    return meta


def check_layout(spec, out, ref):
    """Assert the on-disk properties each fixture exists to exercise."""
    files = sorted(p.name for p in out.glob("*.safetensors"))
    names, dtypes = set(), set()
    for f in files:
        with safe_open(str(out / f), "pt") as st:
            for k in st.keys():
                names.add(k)
                dtypes.add(str(st.get_slice(k).get_dtype()))
    checks = {"weight_files": files, "weight_dtypes": sorted(dtypes)}
    name = spec["name"]
    if name == "llama-gqa":
        if not (out / "model.safetensors.index.json").exists() or len(files) < 2:
            raise SystemExit(f"{name}: expected a sharded checkpoint, got {files}")
    if name == "llama3-tied":
        if "lm_head.weight" in names:
            raise SystemExit(f"{name}: tied checkpoint should not store lm_head.weight")
        if ref.lm_head.weight.data_ptr() != ref.model.embed_tokens.weight.data_ptr():
            raise SystemExit(f"{name}: transformers did not tie lm_head to embed_tokens")
        bands = llama3_bands(ref.config)
        if min(bands.values()) < 1:
            raise SystemExit(f"{name}: llama3 rope must have every band, got {bands}")
        checks["llama3_rope_bands"] = bands
    elif "lm_head.weight" not in names:
        raise SystemExit(f"{name}: untied checkpoint lacks lm_head.weight")
    want = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}[spec["disk_dtype"]]
    if dtypes != {want}:
        raise SystemExit(f"{name}: weights on disk are {dtypes}, expected {want}")
    return checks


def check_v4_layout(out, tokens, logits):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in out.iterdir():
            if f.name not in ("config.json", "config.v4.json"):
                shutil.copy(f, tmp / f.name)
        shutil.copy(out / "config.v4.json", tmp / "config.json")
        v4_logits, _ = forward(load_f32(tmp), tokens)
    return assert_close(logits, v4_logits, f"{out.name}: config.v4.json layout", tol=0.0)


def generate(out_root, command):
    out_root.mkdir(parents=True, exist_ok=True)
    print(f"HF checkpoints -> {out_root}")
    for spec in SPECS:
        generate_one(spec, out_root, command)
