#!/usr/bin/env bash
# How long training stalls per checkpoint, written synchronously ([checkpoint] async = false)
# and in the background (the default), on the CPU with the `small` and `gpt2-124m` presets.
# Each run takes STEPS steps with a checkpoint every 2; the final checkpoint (always waited
# for) is left out. Prints per model and mode the median pause, the part of it spent copying
# the state to host memory, and the async/blocking ratio, all measured in this one run.
#   scripts/bench-checkpoint.sh [--models "small gpt2-124m"] [--steps N] [--binary FUCINA]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="small gpt2-124m"
steps=7
binary=""
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --models) [ $# -ge 2 ] || usage; models="$2"; shift 2 ;;
    --steps) [ $# -ge 2 ] || usage; steps="$2"; shift 2 ;;
    --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "bench-checkpoint: unknown argument $1" >&2; usage ;;
  esac
done
if [ -z "$binary" ]; then
  (cd "$repo" && cargo build --release --quiet)
  binary="$repo/target/release/fucina"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The median of the pauses (and of their host-copy part) of every checkpoint but the last.
pauses() {
  grep -o 'training paused [0-9.]* s.*host copy [0-9.]* s' "$1" | head -n -1 |
    awk '{print $3, $(NF-1)}' |
    sort -n | awk '{p[NR]=$1; c[NR]=$2} END {m=int((NR+1)/2); printf "%s %s\n", p[m], c[m]}'
}

printf '%-10s %-9s %12s %12s %12s\n' model mode "paused (s)" "copy (s)" "checkpoint"
for model in $models; do
  declare -A paused=()
  for mode in false true; do
    run="$work/$model-$mode"
    cat > "$run.toml" <<TOML
out_dir = "$run"
seed = 1
[model]
preset = "$model"
[data]
dir = "builtin"
seq_len = 128
[train]
steps = $steps
global_batch_tokens = 256
micro_batch_size = 2
lr = 1e-3
[eval]
every = 0
[checkpoint]
every = 2
keep = 2
async = $mode
TOML
    "$binary" train "$run.toml" --sample-tokens 0 > "$run.log" 2>&1 ||
      { cat "$run.log" >&2; exit 1; }
    read -r pause copy < <(pauses "$run.log")
    size="$(du -sh "$run/checkpoints/$(ls "$run/checkpoints" | tail -1)" | cut -f1)"
    name=$([ "$mode" = true ] && echo async || echo blocking)
    printf '%-10s %-9s %12s %12s %12s\n' "$model" "$name" "$pause" "$copy" "$size"
    paused[$mode]="$pause"
  done
  awk -v a="${paused[true]}" -v b="${paused[false]}" -v m="$model" \
    'BEGIN {printf "%-10s async/blocking stall: %.2f\n", m, a / b}'
  unset paused
done
