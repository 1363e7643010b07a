#!/usr/bin/env bash
# Fine-tunes the tiny transformers-written checkpoints in tests/fixtures/hf with fucina, exports
# them, and has plain transformers and peft load the exports and record their logits:
#   tests/fixtures/hf-export/<name>/model/          what `fucina export` wrote (a HF directory)
#   tests/fixtures/hf-export/<name>/adapter/        the PEFT adapter (LoRA runs)
#   tests/fixtures/hf-export/<name>/transformers.safetensors   transformers' logits of model/
#   tests/fixtures/hf-export/<name>/peft.safetensors           peft's logits of base + adapter/
# The Rust tests (crates/fucina-train/tests/hf_export_check.rs) load the same directories in
# fucina and compare. Needs the virtualenv of scripts/hf-fixtures.sh (made on first use).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="tests/fixtures/hf-export"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
fucina="$repo/target/release/fucina"

# A word-level tokenizer over the fixtures' 256 ids and a patterned corpus in those words.
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, 256)}}
tok = {"version": "1.0", "truncation": None, "padding": None,
       "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                         "rstrip": False, "normalized": False, "special": True}],
       "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
       "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"}}
json.dump(tok, open(f"{work}/tokenizer.json", "w"))
with open(f"{work}/corpus.txt", "w") as f:
    for d in range(200):
        words = [f"w{1 + (i * 31 + d * 7 + (i // 5) * 3) % 255}" for i in range(40)]
        f.write(" ".join(words) + "\n\n")
PY
"$fucina" prepare --tokenizer "$work/tokenizer.json" --out "$work/data" --val-fraction 0.1 "$work/corpus.txt"

run() { # name, extra TOML
  local name="$1" extra="$2"
  cat > "$work/$name.toml" <<TOML
out_dir = "$work/run-$name"
seed = 3
[model]
hf = "$repo/tests/fixtures/hf/$name"
$extra
[data]
dir = "$work/data"
tokenizer = "$work/tokenizer.json"
seq_len = 16
[train]
steps = 4
global_batch_tokens = 128
micro_batch_size = 4
lr = 1e-2
[eval]
every = 0
[checkpoint]
every = 4
TOML
  "$fucina" train "$work/$name.toml" --sample-tokens 0
  rm -rf "${out:?}/$name"
  mkdir -p "$out/$name"
}

check_export() { # name
  .venv-fixtures/bin/python --version >/dev/null 2>&1 || true
  bash scripts/hf-fixtures.sh check-export --exported "$out/$1/model" \
    --tokens-from "tests/fixtures/hf/$1/reference.safetensors" \
    --out "$out/$1/transformers.safetensors" --tol 10
}

# LoRA on the GQA model: the adapter for peft, and the merged model for transformers.
run llama-gqa '[lora]
r = 4
alpha = 8.0
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]'
"$fucina" export "$work/run-llama-gqa" --out "$out/llama-gqa/adapter"
"$fucina" export "$work/run-llama-gqa" --merge --out "$out/llama-gqa/model"
check_export llama-gqa
bash scripts/hf-fixtures.sh check-peft --base tests/fixtures/hf/llama-gqa \
  --adapter "$out/llama-gqa/adapter" --tokens-from tests/fixtures/hf/llama-gqa/reference.safetensors \
  --out "$out/llama-gqa/peft.safetensors"

# Full fine-tuning of the tied llama3-rope model (exported in its f16) and Mistral (bf16).
for name in llama3-tied mistral; do
  run "$name" ""
  "$fucina" export "$work/run-$name" --out "$out/$name/model"
  check_export "$name"
done
du -sh "$out"/*
