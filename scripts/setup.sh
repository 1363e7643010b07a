#!/usr/bin/env bash
# Installs what fucina needs on Debian/Ubuntu, skipping whatever is already there:
# a C toolchain and font libraries (loss plots), Open MPI with libclang (rsmpi generates its
# bindings from the MPI headers), Mesa's Vulkan drivers (the wgpu backend, in software when
# there is no GPU), Python 3 where there is none, and a Rust toolchain recent enough for burn 0.21.
set -euo pipefail

packages=(build-essential pkg-config libfontconfig1-dev libfreetype-dev fonts-dejavu-core
          libopenmpi-dev openmpi-bin libclang-dev mesa-vulkan-drivers curl ca-certificates)
# scripts/gpu-check.sh (and its test) writes its report with Python: any python3 will do.
command -v python3 >/dev/null || packages+=(python3)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: not root and no sudo; install: ${packages[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: no apt-get; install the equivalents of: ${missing[*]}" >&2
    exit 1
  fi
fi

# burn 0.21 needs Rust ≥ 1.92.
need_minor=92
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
minor=$(rustc --version 2>/dev/null | sed -E 's/^rustc 1\.([0-9]+).*/\1/' || true)
if ! [[ "$minor" =~ ^[0-9]+$ ]] || [ "$minor" -lt "$need_minor" ]; then
  if command -v rustup >/dev/null; then
    rustup toolchain install stable --profile minimal -c clippy,rustfmt
    rustup default stable
  else
    echo "setup: installing Rust with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    . "$HOME/.cargo/env"
  fi
fi
for component in clippy rustfmt; do
  cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$component"
done
