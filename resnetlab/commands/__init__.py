"""The commands of `resnetlab COMMAND`, one module each: `add_arguments(parser)`, `run(args)`.

The module docstring is the command's help text. Commands turn flags into calls of the
library (training, inference, reports); they hold no training or model logic of their own.
"""
