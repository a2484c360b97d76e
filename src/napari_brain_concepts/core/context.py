"""What every pipeline step receives: the study, the results store, the parameters and shared state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, check_ranges
from .io.results import ResultsStore
from .study import Study


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when a CUDA device is usable, else ``"cpu"``; other values are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("parameter device", f"{device!r} was asked for but no CUDA device is available",
                         "use device='auto' or 'cpu'")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InputError("parameter device", f"{device!r} is not a device", "use 'auto', 'cpu' or 'cuda'")
    return device


@dataclass
class AnalysisContext:
    """Shared by the steps of one analysis.

    ``params`` maps a step name to that step's parameter dataclass (or dict). ``state`` carries fitted
    objects from one step to the next in memory; every step also writes what later steps need to the
    store, so a resumed run can rebuild ``state`` from disk.
    """

    study: Study
    store: ResultsStore
    params: dict[str, Any] = field(default_factory=dict)
    random_state: int = 0
    device: str = "auto"
    state: dict[str, Any] = field(default_factory=dict)
    log: Any = print

    def step_params(self, step: str, default_cls=None):
        """Parameters of ``step``: the stored dataclass/dict, or ``default_cls()``; numbers outside the ranges
        of ``default_cls`` (its ``RANGES``) raise :class:`InputError` naming them ``step.name``."""
        value = self.params.get(step)
        if value is None:
            return default_cls() if default_cls is not None else {}
        if isinstance(value, dict) and default_cls is not None and dataclasses.is_dataclass(default_cls):
            names = {f.name for f in dataclasses.fields(default_cls)}
            unknown = set(value) - names
            if unknown:
                raise InputError(f"parameters of step {step!r}", f"unknown names {sorted(unknown)}",
                                 f"use some of {sorted(names)}")
            value = default_cls(**value)
        check_ranges(value, getattr(default_cls, "RANGES", {}), prefix=f"{step}.")
        return value

    def rng(self, *keys: int | str) -> np.random.Generator:
        """A generator seeded from the analysis seed and ``keys`` (stable across runs and processes)."""
        import zlib

        words = [self.random_state] + [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
        return np.random.default_rng(words)
