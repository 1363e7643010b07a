# Sourced (not run) by the scripts that need PyTorch as a reference: hf-fixtures.sh and
# bench-pytorch.sh. `torch_venv TAG` makes sure <repo>/.venv-fixtures holds exactly the pins
# below (creating or completing it; reused when it does) and sets $torch_python to its
# interpreter. Needs $repo; honours $PYTHON (default python3) for creating the venv.
# tensorboard is for scripts/tensorboard_fixture.py and tensorboard_read.py, run with
# <repo>/.venv-fixtures/bin/python.
#
# Torch comes from PyPI, whose Linux x86_64 wheel needs the nvidia-*/cuda-toolkit
# wheels even on CPU: with --no-deps `import torch` fails (libcudart.so.13), and
# the CPU-only wheels live on download.pytorch.org, not PyPI. So the venv is
# large (~5.6 GB) but everything runs on the CPU.

torch_pins=(
  torch==2.15.0
  transformers==5.23.0
  safetensors==0.8.0
  peft==0.21.2
  tokenizers==0.23.3
  jinja2==3.1.6
  numpy==2.4.6
  tensorboard==2.21.0
)

torch_venv() {
  local tag="$1" venv="$repo/.venv-fixtures" python="${PYTHON:-python3}"
  if [ ! -x "$venv/bin/python" ]; then
    if ! command -v "$python" >/dev/null; then
      echo "$tag: no $python; install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
      return 1
    fi
    # Debian splits venv's pip bootstrap out of python3: without it `venv` half-creates the
    # directory and then fails.
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
      echo "$tag: $python cannot create virtualenvs; install the Debian package python3-venv" \
        "(apt-get install python3-venv)" >&2
      return 1
    fi
    echo "$tag: creating virtualenv $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv" || {
      echo "$tag: creating $venv failed; remove it and retry" >&2
      return 1
    }
  fi
  if torch_pins_ok "$venv/bin/python"; then
    echo "$tag: reusing $venv (${torch_pins[*]})"
  else
    echo "$tag: installing ${torch_pins[*]} into $venv (~5.6 GB from PyPI)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${torch_pins[@]}" || {
      echo "$tag: pip could not install the pins into $venv (needs PyPI and ~6 GB of disk)" >&2
      return 1
    }
  fi
  torch_python="$venv/bin/python"
}

# Exit status 0 when every pin is installed at exactly its version.
torch_pins_ok() {
  "$1" - "${torch_pins[@]}" <<'PY'
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
