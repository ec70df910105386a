"""Training and evaluation: `resnetlab train` and `resnetlab eval`.

The pieces are importable on their own (config, schedule, optim, checkpoint,
evaluate); `train.train(cfg, out_dir)` is the loop the command runs.
"""

from resnetlab.training.config import TrainConfig, recipe
from resnetlab.training.evaluate import EvalResult, evaluate
from resnetlab.training.schedule import LrSchedule

__all__ = ["EvalResult", "LrSchedule", "TrainConfig", "evaluate", "recipe"]
