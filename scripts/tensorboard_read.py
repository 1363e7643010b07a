"""Prints a fucina run's TensorBoard scalars as TensorBoard itself reads them, as JSON:
{"tag": [[step, value], ...], ...}.

  .venv-fixtures/bin/python scripts/tensorboard_read.py RUN_DIR

A check of the event files against metrics.jsonl with TensorBoard's own reader (needs the
tensorboard pin of scripts/torch-venv.sh).
"""

import json
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__)
    logdir = Path(argv[0]) / "tensorboard"
    if not logdir.is_dir():
        sys.exit(f"no {logdir}")
    # size_guidance 0: keep every scalar, not a sample of them.
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {
        tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in sorted(acc.Tags()["scalars"])
    }
    # One tag a line: a run's scalars stay readable in a terminal.
    lines = [f"  {json.dumps(tag)}: {json.dumps(points)}" for tag, points in scalars.items()]
    print("{\n" + ",\n".join(lines) + "\n}")


if __name__ == "__main__":
    main(sys.argv[1:])
