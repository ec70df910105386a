"""`resnetlab COMMAND ...`: one entry point, one module per command.

Each command's module is imported only when it runs, so `resnetlab models` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings

from resnetlab.errors import UserError
from resnetlab.version import __version__

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("resnetlab.commands.models", "list every registered model"),
    "summary": ("resnetlab.commands.summary", "layer tree, parameters, MACs and FLOPs of a model"),
    "train": ("resnetlab.commands.train", "train a model"),
    "eval": ("resnetlab.commands.eval", "evaluate a checkpoint"),
    "reproduce": ("resnetlab.commands.reproduce", "run one of the paper's experiments"),
    "report": ("resnetlab.commands.report", "write report.md and pictures for an experiment"),
    "predict": ("resnetlab.commands.predict", "top-k classes of images with a trained model"),
    "explain": ("resnetlab.commands.explain", "Grad-CAM heat maps: where a model looks in images"),
    "export": ("resnetlab.commands.export", "export a checkpoint to ONNX or safetensors"),
}


class OneLineParser(argparse.ArgumentParser):
    """Argument errors are one line and exit code 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that command's module is imported."""
    parser = OneLineParser(prog="resnetlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler, torchrun stopping its workers): unwound as Ctrl-C is, so
    that the run stops between atomic writes and resumes."""

    exit_code = 128 + signal.SIGTERM


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Warnings (e.g. a dataset file's checksum) as one line, without source code.
    warnings.formatwarning = lambda message, *_: f"resnetlab: warning: {message}\n"
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    on_main = threading.current_thread() is threading.main_thread()  # else signal() raises
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main else None
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"resnetlab {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"resnetlab {args.command}: {what}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
