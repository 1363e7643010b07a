#!/usr/bin/env bash
# Re-trains the built-in tokenizer (byte-level BPE, 4,096 tokens) on the built-in corpus.
# Run after scripts/make_corpus.py; the result is committed and compiled into the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet -- tokenizer train --vocab-size 4096 \
  --out crates/fucina-data/corpus/tokenizer.json crates/fucina-data/corpus/*.txt
