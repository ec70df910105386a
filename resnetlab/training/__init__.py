"""Training: the configuration, the loop (engine), the run folder and its checkpoints.

`train(cfg, out_dir)` is the entry point; `resolve_config` and `read_run` prepare a new run
and a resumed one; the pieces (schedule, optim, evaluate, ema) are importable on their own.
"""

from resnetlab.training.config import TrainConfig, recipe, resolve_config
from resnetlab.training.engine import train
from resnetlab.training.evaluate import EvalResult, evaluate
from resnetlab.training.run_folder import check_output_dir, read_run
from resnetlab.training.schedule import LrSchedule

__all__ = [
    "EvalResult",
    "LrSchedule",
    "TrainConfig",
    "check_output_dir",
    "evaluate",
    "read_run",
    "recipe",
    "resolve_config",
    "train",
]
