"""One error type for bad input: it names the file or parameter, the problem and the fix."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any


class BrainConceptsError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(BrainConceptsError, ValueError):
    """Bad input: a file, a folder or a parameter that cannot be used as given.

    The message always reads ``WHERE: PROBLEM. Fix: HOW`` so that a user sees in one line which file
    (or parameter) is wrong, what is wrong with it and what to do.
    """

    def __init__(self, where: str | PathLike, problem: str, fix: str):
        self.where = str(where)
        #: ``where`` when it was given as a path (a file or folder), else None
        self.path = Path(where) if isinstance(where, PathLike) else None
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(f"{self.where}: {self.problem}. Fix: {self.fix}.")

    def __reduce__(self):
        # rebuilt from its three parts (not from ``args``, which holds the one message), so that the error
        # survives pickling: joblib and dask workers send it back to the caller that way
        return self.__class__, (self.where if self.path is None else self.path, self.problem, self.fix)


class InputTypeError(InputError, TypeError):
    """An :class:`InputError` about a value's type (an array of strings where numbers are needed): also a
    ``TypeError``, as Python and scikit-learn raise for it."""


def _not_fitted_class() -> type:
    cls = globals().get("NotFitted")
    if cls is None:
        from sklearn.exceptions import NotFittedError

        class NotFitted(InputError, NotFittedError):
            """An estimator used before ``fit``: the package's :class:`InputError` and scikit-learn's
            ``NotFittedError`` at once, so that ``except NotFittedError`` (and scikit-learn's own checks)
            catch it as they catch the error of ``sklearn.utils.validation.check_is_fitted``."""

        NotFitted.__module__ = __name__
        NotFitted.__qualname__ = "NotFitted"  # pickled by name, as any module-level class
        cls = globals()["NotFitted"] = NotFitted
    return cls


def __getattr__(name: str) -> Any:
    # ``NotFitted`` derives from scikit-learn's NotFittedError, so it is made on first use: importing this
    # module (the command line does, at start-up) does not import scikit-learn
    if name == "NotFitted":
        return _not_fitted_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def not_fitted(estimator: Any, fix: str = "call fit(X, Y) first") -> InputError:
    """The error an estimator raises when used before ``fit``: a ``NotFitted`` (both :class:`InputError` and
    scikit-learn's ``NotFittedError``) reading ``CLASS: is not fitted yet. Fix: FIX.``"""
    return _not_fitted_class()(type(estimator).__name__, "is not fitted yet", fix)


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


@dataclass(frozen=True)
class Range:
    """The interval a numeric parameter must lie in: [low, high], ``None`` for an open-ended side, ``low_open``
    / ``high_open`` to leave an end out (the tables of :mod:`.ranges`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, name: str, value: float) -> None:
        """Raise :class:`InputError` when parameter ``name`` is outside this interval."""
        check_range(name, value, self.low, self.high, low_open=self.low_open, high_open=self.high_open)


def check_ranges(params: Any, ranges: Mapping[str, Range], prefix: str = "") -> None:
    """Check the parameters of ``params`` (a mapping of name to value, or an object with them as attributes)
    that ``ranges`` names; the error names each as ``prefix + name`` (e.g. ``masks.sparsity``).

    A name ``params`` lacks, ``None``, and values that are not numbers (a text, a dict: other checks say
    what is wrong with them) are passed over; a list or tuple is checked item by item.
    """
    for name, interval in ranges.items():
        value = params.get(name) if isinstance(params, Mapping) else getattr(params, name, None)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, numbers.Real) and not isinstance(item, bool):
                interval.check(prefix + name, item)


def check_choices(params: Any, choices: Mapping[str, tuple[str, ...]], prefix: str = "") -> None:
    """Check the text parameters of ``params`` (a mapping, or an object with them as attributes) that must be one
    of a few (``choices``: name → the allowed values; a list is checked item by item); the error names each as
    ``prefix + name`` (e.g. ``rsa.stimuli``). A name ``params`` lacks, and ``None``, are passed over."""
    for name, allowed in choices.items():
        value = params.get(name) if isinstance(params, Mapping) else getattr(params, name, None)
        if value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if item not in allowed:
                raise InputError(f"parameter {prefix}{name}", f"{item!r} is unknown",
                                 f"use one of {', '.join(repr(a) for a in allowed)}")
