"""Reference fixtures for fucina's Hugging Face import/export, chat templates and LoRA.

  hf_fixtures.py [generate]        tests/fixtures/hf/* and tests/fixtures/chat/*
  hf_fixtures.py packed            tests/fixtures/hf/*/packed.safetensors (packed documents)
  hf_fixtures.py check-export ...  run transformers on a checkpoint fucina exported
  hf_fixtures.py check-peft ...    run peft on a LoRA adapter fucina exported

Run through scripts/hf-fixtures.sh, which pins the versions.
"""

import argparse
import os
import sys
from pathlib import Path

# Never reach for the hub: everything here is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    g = sub.add_parser("generate", help="regenerate tests/fixtures/hf and tests/fixtures/chat")
    g.add_argument("--only", choices=["hf", "chat"], help="regenerate one section only")
    sub.add_parser("packed", help="tests/fixtures/hf/*/packed.safetensors from the models there")

    e = sub.add_parser("check-export", help="logits of an exported HF checkpoint vs a reference")
    e.add_argument("--exported", required=True, type=Path, help="HF model directory fucina wrote")
    e.add_argument("--tokens-from", required=True, type=Path, help="reference.safetensors with `tokens` (and `logits`)")
    e.add_argument("--out", required=True, type=Path, help="safetensors file to write `logits` to")
    e.add_argument("--tol", type=float, default=1e-4, help="fail above this max abs logits diff / max |reference| (default 1e-4)")

    c = sub.add_parser("check-peft", help="logits of base + LoRA adapter, unmerged and merged")
    c.add_argument("--base", required=True, type=Path, help="HF base model directory")
    c.add_argument("--adapter", required=True, type=Path, help="PEFT adapter directory")
    c.add_argument("--tokens-from", required=True, type=Path, help="reference.safetensors with `tokens`")
    c.add_argument("--out", required=True, type=Path, help="safetensors file to write `logits` to")
    c.add_argument("--tol", type=float, default=1e-4, help="fail above this merged-vs-unmerged relative diff (default 1e-4)")

    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    # One thread: float sums are then ordered the same on every machine.
    torch.set_num_threads(1)
    # The command that regenerates everything, whatever subset this run did.
    command = "bash scripts/hf-fixtures.sh"

    if args.cmd in (None, "generate"):
        only = getattr(args, "only", None)
        if only in (None, "hf"):
            import hf_fixtures_models

            hf_fixtures_models.generate(REPO / "tests/fixtures/hf", command)
        if only in (None, "chat"):
            import hf_fixtures_chat

            hf_fixtures_chat.generate(REPO / "tests/fixtures/chat", REPO)
        return 0
    if args.cmd == "packed":
        import hf_fixtures_packed

        hf_fixtures_packed.generate(REPO / "tests/fixtures/hf")
        return 0
    import hf_fixtures_check

    if args.cmd == "check-export":
        return hf_fixtures_check.check_export(args.exported, args.tokens_from, args.out, args.tol)
    return hf_fixtures_check.check_peft(args.base, args.adapter, args.tokens_from, args.out, args.tol)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
