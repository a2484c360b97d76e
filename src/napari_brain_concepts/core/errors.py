"""One error type for bad input: it names the file or parameter, the problem and the fix."""

from __future__ import annotations

from os import PathLike


class BrainConceptsError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(BrainConceptsError, ValueError):
    """Bad input: a file, a folder or a parameter that cannot be used as given.

    The message always reads ``WHERE: PROBLEM. Fix: HOW`` so that a user sees in one line which file
    (or parameter) is wrong, what is wrong with it and what to do.
    """

    def __init__(self, where: str | PathLike, problem: str, fix: str):
        self.where = str(where)
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(f"{self.where}: {self.problem}. Fix: {self.fix}.")


class Cancelled(BrainConceptsError):
    """A long step was stopped on request before it finished."""


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`InputError` when parameter ``name`` lies outside [low, high] (or open ends)."""
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise InputError(f"parameter {name}", f"{value!r} is outside {interval}",
                         f"choose {name} in {interval}")
