#!/usr/bin/env bash
# README command 1: train the `small` model on the built-in corpus on the CPU, then print a
# sample. Extra arguments go to `fucina train` (e.g. --set train.steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --quiet
exec target/release/fucina train configs/runs/quickstart.toml "$@"
