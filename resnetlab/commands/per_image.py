"""What the commands that take images (predict, explain) do with each result: an image that
failed is one line on stderr and the others still run; the exit code says if any failed."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from resnetlab.errors import UserError

R = TypeVar("R", bound=Any)  # a result with an ``error`` attribute (None when it worked)


class ImageResults:
    """Iterate to get the results that worked; then `exit_code` for the whole command."""

    def __init__(self, command: str, results: Iterable[R], inputs: list[str]) -> None:
        self.command, self.results, self.inputs = command, results, inputs
        self.done = self.failed = 0

    def __iter__(self) -> Iterator[R]:
        for result in self.results:
            if result.error is not None:
                self.failed += 1
                print(f"resnetlab {self.command}: {result.error}", file=sys.stderr, flush=True)
                continue
            self.done += 1
            yield result

    def exit_code(self) -> int:
        if not self.done and not self.failed:
            raise UserError(f"no images found in {', '.join(self.inputs)}")
        return 1 if self.failed else 0
