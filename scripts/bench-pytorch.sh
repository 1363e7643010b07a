#!/usr/bin/env bash
# Trains the `mini` model (configs/models/mini.toml: Llama, hidden 256, 4 layers) in PyTorch
# (HF LlamaForCausalLM, eager float32, scripts/bench_pytorch.py) and in fucina (`fucina bench
# train`) on the same number of CPU threads, and prints tokens/s of both, their ratio and the
# peak RSS of each. Every measurement is a process of its own, one after the other.
#   scripts/bench-pytorch.sh [--steps N] [--threads "1 2"] [--preset mini]
# --steps: measured steps per run (PyTorch runs 2 more, fucina 1 more, as warm-up). The PyTorch
# virtualenv is the pinned one of scripts/torch-venv.sh (made on first use, ~5.6 GB); fucina is
# built with `cargo build --release` (CARGO_TARGET_DIR honoured).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
steps=10
threads="1 2"
preset=mini
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) [ $# -ge 2 ] || usage; steps="$2"; shift 2 ;;
    --threads) [ $# -ge 2 ] || usage; threads="$2"; shift 2 ;;
    --preset) [ $# -ge 2 ] || usage; preset="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "bench-pytorch: unknown argument $1" >&2; usage ;;
  esac
done
if ! [[ "$steps" =~ ^[0-9]+$ ]] || [ "$steps" -lt 1 ]; then
  echo "bench-pytorch: --steps must be a positive integer (got '$steps')" >&2
  exit 2
fi
read -r -a thread_list <<<"$threads"
if [ ${#thread_list[@]} -eq 0 ]; then
  echo "bench-pytorch: --threads needs at least one thread count, e.g. \"1 2\"" >&2
  exit 2
fi
for t in "${thread_list[@]}"; do
  if ! [[ "$t" =~ ^[0-9]+$ ]] || [ "$t" -lt 1 ]; then
    echo "bench-pytorch: --threads takes positive integers separated by spaces (got '$t')" >&2
    exit 2
  fi
done
model="$repo/configs/models/$preset.toml"
if [ ! -f "$model" ]; then
  echo "bench-pytorch: no model config $model for --preset $preset" >&2
  exit 2
fi

started=$SECONDS
. "$repo/scripts/torch-venv.sh"
torch_venv bench-pytorch

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
command -v cargo >/dev/null || { echo "bench-pytorch: no cargo; run scripts/setup.sh" >&2; exit 1; }
echo "bench-pytorch: building fucina (cargo build --release)"
(cd "$repo" && cargo build --release --quiet)
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
fucina="$target/release/fucina"
[ -x "$fucina" ] || { echo "bench-pytorch: the build left no binary at $fucina" >&2; exit 1; }

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 CUDA_VISIBLE_DEVICES=""

# field LINE REGEX: the first capture group of REGEX in LINE, or fail naming what is missing.
field() {
  local value
  value=$(sed -nE "s@.*$2.*@\1@p" <<<"$1")
  [ -n "$value" ] || { echo "bench-pytorch: no '$2' in: $1" >&2; return 1; }
  echo "$value"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
rows=()
for t in "${thread_list[@]}"; do
  echo "bench-pytorch: $t thread(s): PyTorch"
  torch_out=$(OMP_NUM_THREADS=$t MKL_NUM_THREADS=$t "$torch_python" "$repo/scripts/bench_pytorch.py" \
    --model "$model" --threads "$t" --steps "$steps" --warmup 2) || {
    echo "bench-pytorch: the PyTorch run on $t thread(s) failed" >&2
    exit 1
  }
  torch_line=$(grep '^bench pytorch:' <<<"$torch_out" | tail -1)
  echo "  $torch_line"
  echo "bench-pytorch: $t thread(s): fucina"
  # Its stderr is a progress bar; kept aside and shown only if the run fails.
  fucina_out=$(RAYON_NUM_THREADS=$t OMP_NUM_THREADS=$t "$fucina" bench train --preset "$preset" \
    --steps $((steps + 1)) 2>"$log") || {
    echo "bench-pytorch: fucina bench train on $t thread(s) failed:" >&2
    tail -20 "$log" >&2
    exit 1
  }
  fucina_line=$(grep '^bench train:' <<<"$fucina_out" | tail -1)
  echo "  $fucina_line"

  fucina_threads=$(field "$fucina_line" '× ([0-9]+) thread')
  if [ "$fucina_threads" != "$t" ]; then
    echo "bench-pytorch: fucina ran on $fucina_threads thread(s), not $t" >&2
    exit 1
  fi
  torch_params=$(field "$torch_line" ', ([0-9.]+M)\)')
  fucina_params=$(field "$fucina_line" '\(([0-9.]+M) parameters')
  if [ "$torch_params" != "$fucina_params" ]; then
    echo "bench-pytorch: the models differ: PyTorch $torch_params, fucina $fucina_params parameters" >&2
    exit 1
  fi
  torch_rate=$(field "$torch_line" 'median ([0-9.]+) tokens/s')
  fucina_rate=$(field "$fucina_line" 'median ([0-9.]+) tokens/s')
  torch_rss=$(field "$torch_line" 'peak RSS ([0-9]+ MiB|unknown)')
  fucina_rss=$(field "$fucina_line" 'peak RSS ([0-9]+ MiB|unknown)')
  ratio=$(awk -v f="$fucina_rate" -v p="$torch_rate" 'BEGIN { printf "%.2f", (p > 0 ? f / p : 0) }')
  torch_base=$(field "$torch_line" '\(([0-9]+ MiB|unknown) after imports')
  rows+=("$(printf '%7s | %13s | %12s | %14s | %16s | %15s' \
    "$t" "$torch_rate" "$fucina_rate" "$ratio" "${torch_rss% MiB}" "${fucina_rss% MiB}")")
done

cpu=$(sed -nE 's/^model name[[:space:]]*: *//p' /proc/cpuinfo 2>/dev/null | head -1)
hash=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] || hash="$hash+dirty"
echo
echo "model $preset ($fucina_params parameters), batch 8×256 tokens, median of $steps steps, float32 on the CPU"
echo "PyTorch: $(field "$torch_line" 'bench pytorch: (torch [^,]+)'), HF LlamaForCausalLM, eager, sdpa attention"
echo "fucina:  git $hash, $fucina"
echo "CPU:     ${cpu:-unknown} ($(nproc) logical CPUs)"
echo
echo "threads | PyTorch tok/s | fucina tok/s | fucina/PyTorch | PyTorch peak MiB | fucina peak MiB"
printf '%s\n' "${rows[@]}"
echo "(PyTorch's peak includes the $torch_base its process held after importing torch and transformers)"
echo
echo "bench-pytorch: took $((SECONDS - started)) s"
