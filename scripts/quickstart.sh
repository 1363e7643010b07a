#!/usr/bin/env bash
# README command 1: train a ~4M-parameter model (configs/runs/quickstart.toml) on the built-in
# corpus on the CPU, about 3 minutes on 2 cores, then print a sample.
# Extra arguments go to `fucina train` (e.g. --set train.steps=600).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --quiet
exec target/release/fucina train configs/runs/quickstart.toml "$@"
