#!/usr/bin/env bash
# Builds the pinned PyTorch/transformers virtualenv of scripts/torch-venv.sh in
# <repo>/.venv-fixtures (reused when present) and runs scripts/hf_fixtures.py
# with the given arguments:
#   bash scripts/hf-fixtures.sh                 regenerate tests/fixtures/{hf,chat}
#   bash scripts/hf-fixtures.sh packed          tests/fixtures/hf/*/packed.safetensors
#   bash scripts/hf-fixtures.sh check-export --exported DIR --tokens-from REF --out FILE
#   bash scripts/hf-fixtures.sh check-peft --base DIR --adapter ADIR --tokens-from REF --out FILE
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$repo/scripts/torch-venv.sh"
torch_venv hf-fixtures

# Never touch the Hugging Face hub; fixtures are built from local files only.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1
# CPU only, deterministic float32.
export CUDA_VISIBLE_DEVICES="" PYTHONHASHSEED=0
echo "hf-fixtures: $torch_python scripts/hf_fixtures.py $*"
cd "$repo"
exec "$torch_python" "$repo/scripts/hf_fixtures.py" "$@"
