#!/usr/bin/env bash
# Builds a pinned PyTorch/transformers virtualenv in <repo>/.venv-fixtures (reused
# when present) and runs scripts/hf_fixtures.py with the given arguments.
#   bash scripts/hf-fixtures.sh                 regenerate tests/fixtures/{hf,chat}
#   bash scripts/hf-fixtures.sh check-export --exported DIR --tokens-from REF --out FILE
#   bash scripts/hf-fixtures.sh check-peft --base DIR --adapter ADIR --tokens-from REF --out FILE
#
# Torch comes from PyPI, whose Linux x86_64 wheel needs the nvidia-*/cuda-toolkit
# wheels even on CPU: with --no-deps `import torch` fails (libcudart.so.13), and
# the CPU-only wheels live on download.pytorch.org, not PyPI. So the venv is
# large (~5.6 GB) but everything runs on the CPU.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv-fixtures"
python="${PYTHON:-python3}"

pins=(
  torch==2.15.0
  transformers==5.23.0
  safetensors==0.8.0
  peft==0.21.2
  tokenizers==0.23.3
  jinja2==3.1.6
  numpy==2.4.6
)

if [ ! -x "$venv/bin/python" ]; then
  echo "hf-fixtures: creating virtualenv $venv with $("$python" --version)"
  "$python" -m venv "$venv"
fi
pins_ok() {
  "$venv/bin/python" - "${pins[@]}" <<'PY'
import importlib.metadata as md, sys
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        sys.exit(1)
    if have != want:
        sys.exit(1)
PY
}
if pins_ok; then
  echo "hf-fixtures: reusing $venv (${pins[*]})"
else
  echo "hf-fixtures: installing ${pins[*]} into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
fi

# Never touch the Hugging Face hub; fixtures are built from local files only.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1
# CPU only, deterministic float32.
export CUDA_VISIBLE_DEVICES="" PYTHONHASHSEED=0
echo "hf-fixtures: $venv/bin/python scripts/hf_fixtures.py $*"
cd "$repo"
exec "$venv/bin/python" "$repo/scripts/hf_fixtures.py" "$@"
