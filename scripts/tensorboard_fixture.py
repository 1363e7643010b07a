"""Writes tests/fixtures/tensorboard/scalars.tfevents with TensorBoard's own writer.

fucina's encoder (crates/fucina-train/src/tensorboard.rs) must produce these bytes exactly from
the same events: fixed wall times, so the file never changes between runs. The events cover what
a hand encoder gets wrong: zero and negative-zero values (simple_value is in a oneof, so it is
written even when zero), step 0 (left out by proto3), a step needing a long varint, a UTF-8 tag,
several values in one event, a NaN, and the SessionLog START that a restarted run writes
(values None below).

  .venv-fixtures/bin/python scripts/tensorboard_fixture.py   (needs the tensorboard pin of
  scripts/torch-venv.sh)
"""

import shutil
import tempfile
from pathlib import Path
from unittest import mock

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer import event_file_writer

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/tensorboard/scalars.tfevents"

# Mirrored in the Rust test: (wall_time, step, [(tag, value)]).
FILE_VERSION_WALL_TIME = 1700000000.25
EVENTS = [
    (1700000001.5, 1, [("train/loss", 8.3125), ("train/lr", 0.001), ("train/mfu", 0.0)]),
    (1700000002.75, 2, [("train/loss", 8.0), ("train/grad_norm", -0.0)]),
    (1700000003.0, 0, [("val/loss", 7.5)]),
    (1700000004.125, 300, [("val/loss", 5.9), ("val/français", 6.1)]),
    (1700000004.5, 201, None),
    (1700000005.0, 1 << 40, [("train/loss", float("nan"))]),
]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        # The writer stamps its first event (file_version) with time.time(): fix it.
        with mock.patch.object(event_file_writer.time, "time", return_value=FILE_VERSION_WALL_TIME):
            writer = event_file_writer.EventFileWriter(tmp)
        for wall_time, step, values in EVENTS:
            event = event_pb2.Event(wall_time=wall_time, step=step)
            if values is None:
                event.session_log.status = event_pb2.SessionLog.START
            else:
                event.summary.value.extend(
                    summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values
                )
            writer.add_event(event)
        writer.close()
        (written,) = Path(tmp).iterdir()
        OUT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(written, OUT)
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
