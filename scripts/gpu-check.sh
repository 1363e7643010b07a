#!/usr/bin/env bash
# Is fucina correct on this GPU, and how does it compare with PyTorch on it? One script, about
# 8 minutes on one H100/H200, for a GPU node you have for an hour. Installs nothing: it needs a
# fucina binary built with `--features cuda` (GPU nodes are often offline: build it elsewhere,
# copy it) and uses the PyTorch already on the machine for the reference.
#
#   scripts/gpu-check.sh [--binary PATH] [--out DIR] [--python PY] [--backend cuda|rocm|wgpu]
#   scripts/gpu-check.sh --dry-run        # the same steps at toy sizes on the CPU (CI; or
#                                         # --backend wgpu for the GPU steps on WGPU)
#
# The binary: --binary, else `fucina` or `fucina.zst` next to this script (a zstd-compressed
# binary stays under the 64 MiB many copy tools allow), else target/release/fucina.
# Steps: environment, correctness (HF fixtures vs transformers in f32 and bf16; `mini` on the
# GPU continuing a CPU checkpoint, vs the CPU's losses), throughput (bench train vs PyTorch),
# kernels (attention, matmul), gradient sync on 2 ranks (each transport, where mpirun exists).
# Each has its own time limit; a failed step is reported and the
# next one runs. Out: a Markdown table on stdout, OUT/gpu-check.json, and every step's log and
# JSON under OUT. Exit status 1 when a step failed (skipped steps do not count).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
binary="" out="" python="" backend="" dry=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/fucina-gpu-check.XXXXXX")}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
# Mesa's WSI wants a runtime directory even when nothing is displayed.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$out}

if [ -z "$binary" ]; then
    if [ -x "$here/fucina" ]; then
        binary=$here/fucina
    elif [ -f "$here/fucina.zst" ]; then
        command -v zstd >/dev/null || { echo "gpu-check: $here/fucina.zst needs zstd to unpack" >&2; exit 2; }
        zstd -dqf "$here/fucina.zst" -o "$out/fucina" && chmod +x "$out/fucina" || exit 2
        binary=$out/fucina
    else
        binary=$root/target/release/fucina
    fi
fi
[ -x "$binary" ] || { echo "gpu-check: no fucina binary at $binary (use --binary PATH)" >&2; exit 2; }
# A binary built elsewhere may need libraries this machine lacks (libmpi: a default build links
# the build machine's MPI); say which, rather than fail every step alike.
missing=$(ldd "$binary" 2>/dev/null | awk '/not found/ { print $1 }' | tr '\n' ' ')
if [ -n "$missing" ]; then
    echo "gpu-check: $binary needs ${missing% } and this machine has none of it; on a machine without MPI use a build without it: cargo build --release --no-default-features --features cuda,flex (the gradient-sync steps then skip)" >&2
    exit 2
fi

python=${python:-python3}
command -v "$python" >/dev/null || { echo "gpu-check: no $python (needed for the JSON and comparisons)" >&2; exit 2; }
have_torch=0
"$python" -c 'import torch' 2>/dev/null && have_torch=1

# Sizes. The dry run keeps every step, at sizes a 2-core CI machine runs in a few minutes.
if [ "$dry" = 1 ]; then
    # The CPU by default, to keep CI short (lavapipe compiles shaders for minutes; the WGPU
    # path has tests of its own); --backend wgpu runs the GPU steps on WGPU.
    backend=${backend:-cpu}
    bf16_backend=cpu          # WGSL has no bf16: bf16 runs on the CPU's Flex
    presets="tiny:2"          # preset:micro-batch
    seq=64 steps=3 peak=""
    attn_seqs="64 128" attn_shape="--heads 4 --kv-heads 2 --head-dim 32" matmul_size=256
    limit_short=120 limit_long=240 budget=100000 allreduce_sizes=1
else
    backend=${backend:-cuda}
    bf16_backend=$backend
    # Rows per step at seq 2048 for a GPU of 120 GB or more (H200); fewer below (see step 1).
    presets="gpt2-124m:8 llama-1b:2"
    seq=2048 steps=6 peak=${FUCINA_PEAK_TFLOPS:-}
    attn_seqs="2048 4096" attn_shape="--heads 32 --kv-heads 8 --head-dim 128" matmul_size=8192
    limit_short=90 limit_long=150 allreduce_sizes=16,64
    # torch.compile (a bonus, slow to compile) is skipped once this much time has gone.
    budget=${FUCINA_GPU_CHECK_BUDGET:-300}
fi

# The whole check ends within this time: a step gets at most what is left, and the steps
# after the deadline are reported as skipped.
minutes=${FUCINA_GPU_CHECK_MINUTES:-8}
deadline=$((SECONDS + minutes * 60))

results=$out/steps.jsonl
: > "$results"
failed=0

# record NAME STATUS SECONDS DETAIL [JSON_FILE...]
record() {
    local name=$1 status=$2 seconds=$3 detail=$4
    shift 4
    "$python" - "$name" "$status" "$seconds" "$detail" "$@" >> "$results" <<'PY'
import json, sys
name, status, seconds, detail, *files = sys.argv[1:]
data = {}
for f in files:
    try:
        data[f.rsplit("/", 1)[-1].removesuffix(".json")] = json.load(open(f))
    except (OSError, ValueError):
        pass
print(json.dumps({"step": name, "status": status, "seconds": float(seconds), "detail": detail, "data": data}))
PY
    [ "$status" = failed ] && failed=1
    printf 'gpu-check: %-28s %-7s %5.0f s  %s\n' "$name" "$status" "$seconds" "$detail" >&2
}

# run NAME LIMIT COMMAND... : runs with a time limit, logs to OUT/NAME.log, records ok/failed.
# JSON files the command writes go in $json_files (set by the caller).
run() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS status=ok detail="" left=$((deadline - SECONDS))
    if [ "$left" -lt 15 ]; then
        skip "$name" "the ${minutes}-minute budget is spent (FUCINA_GPU_CHECK_MINUTES)"
        json_files=""
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        status=failed detail="over its ${limit} s limit"
    elif [ $rc != 0 ]; then
        status=failed detail="exit $rc: $(grep -E 'error|panicked|Error' "$out/$name.log" | head -n 1 | cut -c1-160)"
    else
        # The end of the last line holds the figures (and the verdict).
        detail=$(tail -n 1 "$out/$name.log")
        [ ${#detail} -gt 160 ] && detail="…${detail: -160}"
    fi
    record "$name" "$status" $((SECONDS - start)) "$detail" ${json_files:-}
    json_files=""
    [ "$status" = ok ]
}

skip() { record "$1" skipped 0 "$2"; }

# 1. Environment
if command -v nvidia-smi >/dev/null; then
    if line=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1) && [ -n "$line" ]; then
        "$python" -c 'import json, sys; n, d, m = [x.strip() for x in sys.argv[1].split(",")]; print(json.dumps({"name": n, "driver": d, "memory": m}))' "$line" > "$out/gpu.json"
        record gpu-info ok 0 "$line" "$out/gpu.json"
    else
        record gpu-info failed 0 "nvidia-smi found no GPU"
    fi
    # The dense bf16 peak for the MFU, from the GPU's name (NVIDIA's data sheets, SXM parts).
    if [ -z "$peak" ] && [ "$dry" = 0 ]; then
        case "$line" in
            *H100*|*H200*|*GH200*) peak=989 ;;
            *A100*) peak=312 ;;
            *L40S*) peak=362 ;;
        esac
    fi
    gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1 | tr -dc 0-9)
    # fucina's attention is still materialised: at seq 2048 a row costs ~10 GB (gpt2-124m,
    # measured on the CPU) and ~35 GB (llama-1b, by the same count of [heads, s, s] tensors).
    if [ -n "$gpu_mib" ] && [ "$dry" = 0 ]; then
        if [ "$gpu_mib" -lt 70000 ]; then
            presets="gpt2-124m:2 llama-1b:1"
        elif [ "$gpu_mib" -lt 120000 ]; then
            presets="gpt2-124m:4 llama-1b:1"
        fi
    fi
else
    skip gpu-info "no nvidia-smi"
fi
json_files="$out/doctor.json"
run doctor 120 "$binary" doctor --backend "$backend" --json "$out/doctor.json"
if [ "$have_torch" = 1 ]; then
    "$python" -c 'import torch, json; print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available()}))' > "$out/torch.json" 2>/dev/null
    record torch ok 0 "$(cat "$out/torch.json")" "$out/torch.json"
else
    skip torch "no PyTorch for $python: the PyTorch columns stay empty"
fi

# 2. Correctness
for fixture in "$root"/tests/fixtures/hf/*/; do
    name=$(basename "$fixture")
    for precision in f32 bf16; do
        on=$backend
        [ "$precision" = bf16 ] && on=$bf16_backend
        json_files="$out/hf-$name-$precision.json"
        run "hf-$name-$precision" "$limit_short" "$binary" bench hf "$fixture" --backend "$on" \
            --precision "$precision" --json "$out/hf-$name-$precision.json"
    done
done

# mini: five steps on the GPU continuing a CPU checkpoint (initialisation differs between backends' RNGs),
# so the weights and data agree and only the arithmetic differs.
cat > "$out/mini.toml" <<EOF
seed = 7
[model]
preset = "mini"
[data]
dir = "builtin"
seq_len = 64
[train]
steps = 6
global_batch_tokens = 512
micro_batch_size = 8
lr = 1e-3
warmup_steps = 1
[eval]
every = 0
[checkpoint]
every = 1
keep = 0
EOF
mini_ok=1
run mini-cpu "$limit_long" "$binary" train "$out/mini.toml" --sample-tokens 0 \
    --set backend=cpu --set out_dir="$out/mini-cpu" || mini_ok=0
if [ "$mini_ok" = 1 ]; then
    run mini-gpu "$limit_long" "$binary" train "$out/mini.toml" --sample-tokens 0 \
        --set backend="$backend" --set out_dir="$out/mini-gpu" \
        --resume "$out/mini-cpu/checkpoints/step_00000001" || mini_ok=0
fi
if [ "$mini_ok" = 1 ]; then
    json_files="$out/mini-compare.json"
    run mini-vs-cpu 30 "$python" - "$out/mini-cpu/metrics.jsonl" "$out/mini-gpu/metrics.jsonl" "$out/mini-compare.json" <<'PY'
import json, sys
def losses(path):
    return {e["step"]: e["loss"] for e in map(json.loads, open(path)) if e.get("kind") == "train"}
cpu, gpu = losses(sys.argv[1]), losses(sys.argv[2])
steps = sorted(gpu)
if steps != [2, 3, 4, 5, 6]:
    sys.exit(f"the GPU run logged steps {steps}, expected 2..6")
worst = max(abs(gpu[s] - cpu[s]) / abs(cpu[s]) for s in steps)
# f32 on both; GPU reductions run in another order (and matmuls may use TF32): 1e-3 relative.
ok = worst <= 1e-3
json.dump({"cpu": [cpu[s] for s in steps], "gpu": [gpu[s] for s in steps], "max_relative": worst, "ok": ok}, open(sys.argv[3], "w"))
print(f"steps 2..6 on the GPU vs the CPU: max relative difference {worst:.1e} (tolerance 1e-3)")
sys.exit(0 if ok else 1)
PY
else
    skip mini-vs-cpu "a mini run did not complete"
fi

# 3. Throughput, with the peak GPU memory each process held (nvidia-smi, polled).
watch_memory() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$1" 2>/dev/null &
        echo $!
    fi
}
stop_memory() { # PID FILE -> peak MiB (minus the idle baseline) into FILE.peak
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null; wait "$1" 2>/dev/null
    sort -n "$2" | awk -v base="$idle_mib" 'NF { last = $1 } END { if (last != "") print last - base }' > "$2.peak"
}
idle_mib=0
command -v nvidia-smi >/dev/null && idle_mib=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n 1 | tr -dc 0-9)
for item in $presets; do
    preset=${item%%:*} micro=${item##*:}
    model="$root/configs/models/$preset.toml"
    pid=$(watch_memory "$out/mem-fucina-$preset")
    json_files="$out/train-fucina-$preset.json"
    run "train-fucina-$preset" "$limit_long" "$binary" bench train --preset "$preset" --backend "$bf16_backend" \
        --precision bf16 --seq-len "$seq" --micro-batch "$micro" --steps "$steps" \
        ${peak:+--peak-tflops "$peak"} --json "$out/train-fucina-$preset.json"
    stop_memory "$pid" "$out/mem-fucina-$preset"
    if [ "$have_torch" = 1 ]; then
        for mode in eager compile; do
            if [ "$mode" = compile ] && [ $SECONDS -gt "$budget" ]; then
                skip "train-torch-compile-$preset" "past the ${budget} s budget for optional steps"
                continue
            fi
            pid=$(watch_memory "$out/mem-torch-$mode-$preset")
            json_files="$out/train-torch-$mode-$preset.json"
            run "train-torch-$mode-$preset" "$limit_long" "$python" "$here/gpu_check_torch.py" train \
                --model "$model" --seq-len "$seq" --micro-batch "$micro" --steps "$steps" \
                $([ "$mode" = compile ] && echo --compile) --json "$out/train-torch-$mode-$preset.json"
            stop_memory "$pid" "$out/mem-torch-$mode-$preset"
            # torch.compile is a bonus: skip it in the dry run, where it compiles for the CPU.
            [ "$dry" = 1 ] && break
        done
    else
        skip "train-torch-$preset" "no PyTorch"
    fi
done

# 4. Kernels
for s in $attn_seqs; do
    json_files="$out/attention-fucina-$s.json"
    run "attention-fucina-$s" "$limit_short" "$binary" bench attention --backend "$bf16_backend" --precision bf16 \
        --seq "$s" $attn_shape --json "$out/attention-fucina-$s.json"
    if [ "$have_torch" = 1 ]; then
        json_files="$out/attention-torch-$s.json"
        run "attention-torch-$s" "$limit_short" "$python" "$here/gpu_check_torch.py" attention --seq "$s" \
            $attn_shape --json "$out/attention-torch-$s.json"
    fi
done
json_files="$out/matmul-fucina.json"
run matmul-fucina "$limit_short" "$binary" bench matmul --backend "$bf16_backend" --precision bf16 \
    --size "$matmul_size" --json "$out/matmul-fucina.json"
if [ "$have_torch" = 1 ]; then
    json_files="$out/matmul-torch.json"
    run matmul-torch "$limit_short" "$python" "$here/gpu_check_torch.py" matmul --size "$matmul_size" \
        --json "$out/matmul-torch.json"
fi

# two_ranks TRANSPORT: `mini` trained by 2 ranks; prints the run, then one line with the median
# step time and the exposed communication.
two_ranks() {
    local dir=$out/mini-2ranks-$1
    mpirun -np 2 $mpi_flags "$binary" train "$out/mini.toml" --sample-tokens 0 \
        --set backend="$backend" --set out_dir="$dir" --set dist.transport="$1" \
        --set train.micro_batch_size=4 --set checkpoint.every=0 > "$dir.log" 2>&1
    local rc=$?
    cat "$dir.log"
    [ $rc = 0 ] || return $rc
    "$python" - "$dir/metrics.jsonl" "$(grep -o 'communication: [0-9.]*%' "$dir.log" | tail -n 1)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
steps = [r["step_seconds"] for r in rows[1:]] or [r["step_seconds"] for r in rows]
print(f"2 ranks: median step {statistics.median(steps):.3f} s, {sys.argv[2] or 'communication: not reported'} exposed")
PY
}

# 5. Gradient sync: 2 ranks on this one GPU through each transport the backend can use, each
# against a raw MPI_Allreduce from host memory. mpi-device needs a CUDA-aware MPI (it is
# refused otherwise, and says so); NCCL refuses two ranks on one GPU, so it needs two.
if ! command -v mpirun >/dev/null; then
    skip allreduce "no mpirun on this machine"
elif ! ldd "$binary" 2>/dev/null | grep -q libmpi; then
    skip allreduce "this fucina was built without MPI"
else
    mpi_flags="--oversubscribe --bind-to none"
    [ "$(id -u)" = 0 ] && mpi_flags="$mpi_flags --allow-run-as-root"
    transports="mpi-host mpi-device"
    [ "$backend" = cuda ] && transports="$transports nccl"
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    for t in $transports; do
        if [ "$t" = nccl ] && [ "${gpus:-0}" -lt 2 ]; then
            skip allreduce-nccl "one GPU: NCCL refuses two ranks on one device (fucina says so and stops)"
            continue
        fi
        # Both ranks on device 0 (each would take the device of its local rank otherwise).
        CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} HIP_VISIBLE_DEVICES=${HIP_VISIBLE_DEVICES:-0} \
            run "allreduce-$t" "$limit_short" mpirun -np 2 $mpi_flags "$binary" bench allreduce \
            --backend "$backend" --transport "$t" --sizes "$allreduce_sizes" --iters 3
    done
    # The same transports in training: 2 ranks of `mini` on device 0, step time and the
    # communication left exposed (the last line).
    export -f two_ranks
    export out binary backend mpi_flags python
    for t in $transports; do
        [ "$t" = nccl ] && [ "${gpus:-0}" -lt 2 ] && continue
        CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} HIP_VISIBLE_DEVICES=${HIP_VISIBLE_DEVICES:-0} \
            run "train-2ranks-$t" "$limit_long" bash -c 'two_ranks "$1"' two_ranks "$t"
    done
fi

# The report: Markdown on stdout, everything in OUT/gpu-check.json.
"$python" "$here/gpu_check_report.py" "$results" "$out" "$dry"
echo "gpu-check: logs and JSON in $out" >&2
exit $failed
