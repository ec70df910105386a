"""Stopping a run at a chosen moment, in-process, for resume tests."""

from __future__ import annotations

import pytest

from resnetlab.cli import main


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
