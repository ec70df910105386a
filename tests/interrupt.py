"""Stopping a run at a chosen moment, in-process, for resume tests; and the seed of the
moments chosen at random."""

from __future__ import annotations

import os
import time

import pytest

from resnetlab.cli import main

SEED_VARIABLE = "RESNETLAB_TEST_SEED"


def replay_seed() -> int:
    """``$RESNETLAB_TEST_SEED`` if set (to replay a failure), else a fresh one from the clock."""
    given = os.environ.get(SEED_VARIABLE, "").strip()
    if given:
        try:
            return int(given)
        except ValueError:
            pytest.fail(f"{SEED_VARIABLE} must be an integer, not {given!r}")
    return time.time_ns() % 2**32


def stopped_after_epoch_2(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``argv`` until epoch 2's state is committed, then stop it as Ctrl-C would
    (its weights files still hold epoch 1: resume must repair them)."""
    import resnetlab.models.weights as weights

    real = weights.save_weights

    def die_on_epoch_2(path, model, meta):  # noqa: ANN001
        if meta["epoch"] == 2:
            raise KeyboardInterrupt
        real(path, model, meta)

    monkeypatch.setattr(weights, "save_weights", die_on_epoch_2)
    assert main(argv) == 130
    monkeypatch.undo()
