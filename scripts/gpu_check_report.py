"""The report of scripts/gpu-check.sh: its steps (steps.jsonl) as Markdown tables on stdout and
as one JSON file, OUT/gpu-check.json. Usage: gpu_check_report.py STEPS_JSONL OUT_DIR DRY_RUN"""

import json
import sys
from pathlib import Path

steps_file, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
steps = [json.loads(line) for line in steps_file.read_text().splitlines() if line.strip()]
by_name = {s["step"]: s for s in steps}


def data(name):
    step = by_name.get(name)
    if not step or step["status"] != "ok" or not step["data"]:
        return None
    return next(iter(step["data"].values()))


def peak_mib(tag):
    path = out / f"mem-{tag}.peak"
    try:
        return float(path.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def fmt(value, spec="{:.0f}", missing="–"):
    return missing if value is None else spec.format(value)


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


lines = [f"# fucina GPU check{' (dry run: toy sizes, not GPU figures)' if dry else ''}", ""]
gpu, doctor, torch = data("gpu-info"), data("doctor"), data("torch")
lines += ["## Environment", ""]
if gpu:
    lines.append(f"- GPU: {gpu['name']}, {gpu['memory']}, driver {gpu['driver']}")
if doctor:
    libs = "; ".join(f"{l['what']}: {l['found'] or 'NOT FOUND'}" for l in doctor.get("libraries", []))
    lines.append(f"- fucina: backend {doctor['backend']} ({doctor['burn_backend']}) on {doctor['device']}, bf16 "
                 f"{'yes' if doctor['bf16'] else 'no'}, first operation {doctor['first_op_seconds']:.2f} s"
                 + (f"; {libs}" if libs else ""))
lines.append(f"- PyTorch: {torch['torch']} (CUDA {'yes' if torch['cuda'] else 'no'})" if torch else "- PyTorch: not found")

lines += ["", "## Correctness", "", "| check | fucina | reference | relative error | tolerance | status |", "|---|---|---|---|---|---|"]
for s in steps:
    if s["step"].startswith("hf-"):
        d = data(s["step"]) or next(iter(s["data"].values()), None)
        if d:
            lines.append(f"| {d['model']} {d['precision']} on {d['backend']} | loss {d['loss']:.6f} | transformers {d['reference_loss']:.6f} | {d['relative']:.1e} | {d['tolerance']:.0e} | {s['status']} |")
        else:
            lines.append(f"| {s['step']} | – | – | – | – | {s['status']} |")
mini = by_name.get("mini-vs-cpu")
if mini:
    d = next(iter(mini["data"].values()), None)
    value = f"{d['max_relative']:.1e}" if d else "–"
    lines.append(f"| mini steps 2–6, GPU vs CPU losses (f32) | {fmt(d and d['gpu'][-1], '{:.5f}')} | CPU {fmt(d and d['cpu'][-1], '{:.5f}')} | {value} | 1e-3 | {mini['status']} |")

lines += ["", "## Training throughput (bf16 mixed precision)", "",
          "| model | seq × micro-batch | fucina tokens/s | MFU | GPU memory | PyTorch eager tokens/s | GPU memory | fucina ÷ eager | torch.compile tokens/s | fucina ÷ compile |",
          "|---|---|---|---|---|---|---|---|---|---|"]
presets = [s["step"].removeprefix("train-fucina-") for s in steps if s["step"].startswith("train-fucina-")]
for preset in presets:
    f = data(f"train-fucina-{preset}")
    e, c = data(f"train-torch-eager-{preset}"), data(f"train-torch-compile-{preset}")
    fr = f and f["tokens_per_sec"]
    er, cr = e and e["tokens_per_sec"], c and c["tokens_per_sec"]
    shape = f"{f['seq_len']} × {f['micro_batch']}" if f else "–"
    lines.append(f"| {preset} | {shape} | {fmt(fr)} | {fmt(f and f['mfu'] and f['mfu'] * 100, '{:.1f}%')} | "
                 f"{fmt(peak_mib('fucina-' + preset), '{:.0f} MiB')} | {fmt(er)} | {fmt(peak_mib('torch-eager-' + preset), '{:.0f} MiB')} | "
                 f"{ratio(fr, er)} | {fmt(cr)} | {ratio(fr, cr)} |")

lines += ["", "## Kernels (bf16)", "", "| kernel | fucina | PyTorch | fucina ÷ PyTorch |", "|---|---|---|---|"]
for s in steps:
    if s["step"].startswith("attention-fucina-"):
        seq = s["step"].removeprefix("attention-fucina-")
        f, t = data(s["step"]), data(f"attention-torch-{seq}")
        cell = lambda d: f"{d['forward_backward_ms']:.2f} ms ({d['forward_backward_tflops']:.3g} TFLOP/s)" if d else "–"
        shape = f" {f['heads']}/{f['kv_heads']} heads × {f['head_dim']}" if f else ""
        lines.append(f"| causal attention fwd+bwd, seq {seq}{shape} | {cell(f)} | {cell(t) if t else '–'} (SDPA) | "
                     f"{ratio(f and f['forward_backward_tflops'], t and t['forward_backward_tflops'])} |")
f, t = data("matmul-fucina"), data("matmul-torch")
if f or t:
    size = (f or t)["size"]
    lines.append(f"| matmul {size}³ | {fmt(f and f['tflops'], '{:.3g} TFLOP/s')} | {fmt(t and t['tflops'], '{:.3g} TFLOP/s')} | "
                 f"{ratio(f and f['tflops'], t and t['tflops'])} |")

lines += ["", "## Steps", "", "| step | status | seconds | detail |", "|---|---|---|---|"]
for s in steps:
    detail = s["detail"].replace("|", "/")
    lines.append(f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {detail} |")

print("\n".join(lines))
failed = [s["step"] for s in steps if s["status"] == "failed"]
report = {"dry_run": dry, "failed": failed, "steps": steps,
          "memory_mib": {p.name.removeprefix("mem-").removesuffix(".peak"): peak_mib(p.name.removeprefix("mem-").removesuffix(".peak"))
                         for p in out.glob("mem-*.peak")}}
(out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
