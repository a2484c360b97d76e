"""Progress reports yielded by every long step (generators that stop cleanly when closed)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` units of ``step`` finished."""

    step: str
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressGenerator = Generator[Progress, None, T]


def run_to_end(gen: Generator[Any, None, T], callback=None) -> T:
    """Drive a step generator to its end and return its return value.

    ``callback`` (optional) receives each yielded :class:`Progress`.
    """
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(item)
