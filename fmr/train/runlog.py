"""Run logs: JSON lines, a per-epoch CSV and TensorBoard events, all under the run folder.

- `log.jsonl`: one object per event: {"kind": "train", step, epoch, loss, ...} every
  `--log-every` steps, {"kind": "val", ...} after each epoch's validation, plus "start",
  "checkpoint", "export" and "stop" events. Appended, so a resumed run continues the file.
- `epochs.csv`: one row per epoch (the numbers a plot needs; closed-set top-1/top-5 per
  condition on packs with a held-out split).
- `tensorboard/`: the same scalars as TensorBoard events (`tensorboard --logdir runs/`).
Only rank 0 logs; other ranks get a logger that does nothing.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

EPOCH_COLUMNS = (
    "epoch", "step", "lr", "loss", "margin_loss", "distill_loss", "angle_deg", "train_accuracy",
    "images_per_s", "val_unmasked_accuracy", "val_masked_accuracy", "val_unmasked_tar",
    "val_masked_tar", "val_score", "seconds", "hours",
    # closed-set accuracy on a pack's held-out split (empty for other packs)
    "val_top1_unmasked", "val_top5_unmasked", "val_top1_surgical", "val_top5_surgical",
    "val_top1_kn95_warp", "val_top5_kn95_warp",
)


class RunLogger:
    def __init__(self, out: Path, enabled: bool = True):
        self.out = Path(out)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"))
        except ImportError:  # the logs above still have everything
            print("train: tensorboard is not installed; writing JSONL and CSV logs only",
                  file=sys.stderr)

    def event(self, kind: str, **values) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "time": round(time.time(), 3), **values}
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=float) + "\n")

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        if self._tb is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and value == value:  # skip NaN
                self._tb.add_scalar(f"{prefix}/{name}", value, step)
        self._tb.flush()

    def epoch_row(self, row: dict) -> None:
        if not self.enabled:
            return
        path = self.out / "epochs.csv"
        new = not path.exists()
        columns = EPOCH_COLUMNS
        if not new:  # a resumed run keeps the columns its file started with
            with open(path, newline="", encoding="utf-8") as handle:
                columns = tuple(next(csv.reader(handle), EPOCH_COLUMNS))
        with open(path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
