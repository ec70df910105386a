"""Train a model. Every run leaves config.json, metrics.csv, summary.json, curves.png and
checkpoints (last, and best by validation accuracy) in its output folder.

  resnetlab train --model resnet20 --dataset cifar10 --download     # the paper's recipe, 64k it.
  resnetlab train --model resnet110 --dataset cifar10 --epochs 30   # shorter, same lr shape
  resnetlab train --model mnist_cnn --dataset mnist --epochs 2
  resnetlab train --model resnet20 --dataset cifar10 --recipe fast  # 30 epochs, one cycle, flip TTA
  resnetlab train --config my.yaml --lr 0.05                        # flags override the file
  resnetlab train --resume runs/resnet20-cifar10-20260101-120000    # continue where it stopped
  torchrun --standalone --nproc-per-node 4 -m resnetlab train ...   # 4 GPUs, -b per GPU

Unset options come from the recipe of the model and dataset (resnetlab/training/config.py);
config.json holds the resolved values and `--config` reads it back. Exit status: 0 done,
1 a result could not be written (the previous checkpoint is kept), 2 bad input (nothing
written), 3 the loss became NaN or infinite (the last checkpoint is kept), 130 interrupted (Ctrl-C)
and 143 terminated (SIGTERM): resume with --resume.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import torch.distributed as dist

from resnetlab.commands.flags import add_training_settings
from resnetlab.data import load_arrays
from resnetlab.data.info import get_info
from resnetlab.data.root import resolve_root
from resnetlab.device import resolve_device, resolve_precision
from resnetlab.errors import UserError
from resnetlab.training import distributed
from resnetlab.training.config import SETTINGS, TrainConfig, load_config_file, resolve_config
from resnetlab.training.engine import TrainingDiverged, resplit_batch, train
from resnetlab.training.run_folder import SUMMARY, check_output_dir, read_run


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flag names follow torchvision's reference train.py and timm's train.py."""
    add_training_settings(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON settings; flags override them")


def run(args: argparse.Namespace) -> int:
    """One process, or one of torchrun's: every rank runs this with the same flags.

    Everything that can refuse the input happens before the processes meet, so a bad
    flag is one line (from local rank 0) and exit 2 on every rank, never a hang.
    """
    world = distributed.world_from_env()
    try:
        flags = {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}
        if args.resume:
            if args.overwrite:
                raise UserError("--resume continues a run and --overwrite replaces it: pick one")
            if args.config:
                raise UserError(
                    "--config cannot be combined with --resume: the run's config.json is used"
                )
            out_dir = Path(args.resume).expanduser()
            cfg, state = read_run(out_dir, flags)
            if (out_dir / SUMMARY).is_file():
                if world.is_main:
                    print(f"{out_dir} holds a finished run; nothing to resume")
                return 0
            resplit_batch(cfg, world)
        else:
            cfg = resolve_config(load_config_file(args.config) if args.config else {}, flags)
            out_dir = Path(cfg.output_dir).expanduser()
            check_output_dir(out_dir, args.overwrite)
            state = None
        device = resolve_device(cfg.device)
        resolve_precision(cfg.precision, device)
        distributed.check_sync_bn(cfg.sync_bn, device)
    except UserError as e:
        if world.local_rank != 0:  # every rank read the same flags and files: one says so
            raise SystemExit(e.exit_code) from None
        raise
    try:
        with (
            open(os.devnull, "w") as quiet,  # tqdm and print: rank 0 only
            contextlib.redirect_stdout(sys.stdout if world.is_main else quiet),
            distributed.process_group(world, device),
        ):
            if cfg.download and world.world_size > 1:
                download_once(cfg, world)
            train(
                cfg,
                out_dir,
                state=state,
                world=world,
                overwrite=args.overwrite,
                resume=bool(args.resume),
            )
    except (KeyboardInterrupt, TrainingDiverged) as e:
        if not world.is_main:  # every rank stops at the same step; rank 0 says it
            raise SystemExit(getattr(e, "exit_code", 130)) from None
        raise
    except UserError as e:
        if not world.is_main:  # this rank's own trouble (e.g. an image in its shard)
            e.args = (f"rank {world.rank}: {e}",)
        raise
    return 0


def download_once(cfg: TrainConfig, world: distributed.World) -> None:
    """--download under torchrun: each machine's first process fetches, the others wait."""
    if world.local_rank == 0 and cfg.dataset != "folder":
        name = get_info(cfg.dataset).name
        for split_is_train in (True, False):
            load_arrays(name, resolve_root(cfg.data_path), train=split_is_train, download=True)
    dist.barrier()
