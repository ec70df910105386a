"""`--logger tensorboard`: the run's numbers, a batch of its inputs and its settings as
TensorBoard event files in RUN/tensorboard, written by the main process next to metrics.csv.

The events are derived from the training state, as metrics.csv is: every start of the run
(fresh or resumed) rewrites them from the epochs on record, so a resume never shows a step
twice. Nothing here draws from a random generator training uses or touches the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from resnetlab.data import DataBundle

LOG_DIR = "tensorboard"
EVENT_FILES = "events.out.tfevents.*"
IMAGES_TAG = "images/train"
GRID_IMAGES = 64  # the first images of the batch, 8 to a row
# metrics.csv column -> tag; TensorBoard groups the tags by what precedes the slash.
TAGS = {
    "train_loss": "loss/train",
    "train_acc": "accuracy/train",
    "eval_loss": "loss/{split}",
    "eval_acc": "accuracy/{split}",
    "raw_eval_acc": "accuracy/{split}_raw",  # --model-ema: the weights themselves
    "lr": "schedule/lr",
    "image_size": "schedule/image_size",
    "images_per_s": "speed/images_per_s",
}
INSTALL = "tensorboard needs the tensorboard package: pip install tensorboard"


def create_logger(logger: str, run_dir: Path, main: bool) -> TensorBoardLogger:
    """The run's logger: only the main process writes, the others' do nothing."""
    return TensorBoardLogger(run_dir / LOG_DIR if logger == "tensorboard" and main else None)


def check_installed(logger: str) -> str | None:
    """The `logger` setting's check: a missing package is refused with the flags, before
    anything is written or any process waits for another."""
    if logger == "tensorboard":
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            return INSTALL
    return None


class TensorBoardLogger:
    """Event files in ``log_dir``; with ``log_dir`` None (``--logger none``, or a process
    other than the main one) every call does nothing."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.writer: Any = None
        self.last: dict[str, float] = {}  # the last epoch's scalars: the hparams' metrics

    def start(self, bundle: DataBundle, history: list[dict[str, Any]]) -> None:
        """A grid of the first training batch at step 0, then the epochs already on record.

        The old event files go (the new one repeats what they held), and purge_step=0 makes a
        TensorBoard that is watching forget what it read of them.
        """
        if self.log_dir is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob(EVENT_FILES):
            old.unlink()
        self.writer = SummaryWriter(str(self.log_dir), purge_step=0)
        self.writer.add_image(IMAGES_TAG, first_batch_grid(bundle), 0)
        for row in history:
            self._add(row)
        self.writer.flush()

    def epoch(self, row: dict[str, Any]) -> None:
        """One metrics.csv row at step = its epoch, on disk before the epoch is committed."""
        if self.writer is not None:
            self._add(row)
            self.writer.flush()

    def end(self, config: dict[str, Any], summary: dict[str, Any]) -> None:
        """The resolved settings (the hparams plugin) with the final numbers as its metrics."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        test = summary["test"] or {}
        final = {
            "final/best_val_accuracy": summary["best_val_acc"],
            "final/test_accuracy": test.get("top1"),
            "final/test_top5": test.get("top5"),
            "final/test_loss": test.get("loss"),
        }
        final = {tag: v for tag, v in final.items() if v is not None}
        step = summary["epochs"]
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, step)
        # hparams() takes the metrics' names; TensorBoard shows each tag's last value.
        metrics = {t: v for t, v in self.last.items() if t.startswith(("loss/", "accuracy/"))}
        for part in hparams(config, {**metrics, **final}):
            self.writer.file_writer.add_summary(part, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _add(self, row: dict[str, Any]) -> None:
        split = row["eval_split"]
        scalars = {
            tag.format(split=split): float(row[column])
            for column, tag in TAGS.items()
            if row[column] is not None
        }
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, row["epoch"])
        self.last = scalars


def first_batch_grid(bundle: DataBundle) -> torch.Tensor:
    """The first batch of epoch 0 (what training starts on), de-normalised into pictures.

    The loaders draw on the CPU only (in memory: their own generators; folders: the
    DataLoader's base seed from the global one), so a CPU fork leaves training's draws as
    they were.
    """
    from torchvision.utils import make_grid

    with torch.random.fork_rng(devices=[]):
        bundle.train.set_epoch(0)
        x, _ = next(iter(bundle.train))
    x = x[:GRID_IMAGES].detach().float().cpu()
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    return make_grid((x * std + mean).clamp(0, 1), nrow=8)
