#!/usr/bin/env bash
# README command 2 (and what CI runs): formatting, lints, a compile check of the GPU backends
# (which cannot run without a GPU but must keep building), then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

# One pass over every backend: the lints, and the proof that CUDA and ROCm (which cannot run
# without a GPU) keep building. A separate `cargo check` of those features checked burn and
# cubecl a second time with other features, minutes of CI. Code only built without CUDA
# (`cfg(not(feature = "cuda"))`) is still compiled by the tests' build below, unlinted.
step "clippy, all backends (cuda, rocm, wgpu, ndarray; wgpu also runs in the tests)"
cargo clippy --workspace --all-targets --features cuda,rocm,wgpu,ndarray -- -D warnings

step "single-node Slurm for the job-script test"
scripts/slurm-local.sh
# The Slurm test fails rather than skips when Slurm is missing here.
export FUCINA_REQUIRE_SLURM=1

step "tests (release build, shared with the quickstart)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace 2>&1 | tee "$log" || status=$?
# One closing line over all test binaries, so a summary is not mistaken for the last binary's.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
