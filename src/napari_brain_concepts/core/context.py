"""What every pipeline step receives: the study, the results store, the parameters and shared state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError, check_choices, check_ranges
from .io.results import ResultsStore
from .study import Embedding, Study

#: the step that computes embeddings from the stimuli's captions, and the table where it lists them
EMBED_STEP = "embed"
_EMBED_TABLE = "alignment_embeddings"


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


@dataclass(repr=False)
class AnalysisContext:
    """Shared by the steps of one analysis.

    ``params`` maps a step name to that step's parameter dataclass (or dict). ``state`` carries fitted
    objects from one step to the next in memory; every step also writes what later steps need to the
    store, so a resumed run can rebuild ``state`` from disk.

    ``scheduler`` (``None``: this process) spreads the subjects' decoders and voxel masks over dask
    workers: ``"local"`` (a LocalCluster of ``n_workers`` processes) or a scheduler's address
    (:mod:`~napari_brain_concepts.core.distributed`); the results equal those of this process.
    """

    study: Study
    store: ResultsStore
    params: dict[str, Any] = field(default_factory=dict)
    random_state: int = 0
    device: str = "auto"
    state: dict[str, Any] = field(default_factory=dict)
    log: Any = print
    scheduler: Any = None
    n_workers: int | None = None

    def __repr__(self) -> str:
        root = getattr(self.store, "root", None)
        return (f"AnalysisContext(study={getattr(self.study, 'name', None)!r}, results='{root}', "
                f"params={self.params!r}, random_state={self.random_state!r}, device={self.device!r}, "
                f"state={sorted(self.state)})")

    def step_params(self, step: str, default_cls=None):
        """Parameters of ``step``: the stored dataclass/dict, or ``default_cls()``; numbers outside the ranges
        of ``default_cls`` (its ``RANGES``) and texts none of its ``CHOICES`` raise :class:`InputError` naming
        them ``step.name``."""
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
        check_choices(value, getattr(default_cls, "CHOICES", {}), prefix=f"{step}.")
        return value

    def embedding(self, name: str, param: str | None = None) -> Embedding:
        """The stimuli's embedding ``name``, for every step that uses one by name (decode, maps, concepts …).

        The study's own (a study folder's ``embeddings/NAME.npy``, or one that a step of this analysis added,
        as the embed step adds the caption embedding it computes), else the one the embed step saved in the
        results folder (a resumed analysis: it is added to the study, so later steps find it there). ``param``
        names the parameter that chose ``name`` (``"decode.embedding"``), for the fix of the error raised when
        there is no such embedding.
        """
        embeddings = self.study.stimuli.embeddings
        if name in embeddings:
            return embeddings[name]
        stored = stored_embedding(self.store, name)
        if stored is not None:
            self.study.stimuli.add_embedding(stored)
            return stored
        raise missing_embedding(self, name, param)

    def embedding_steps(self, name: str) -> tuple[str, ...]:
        """The steps that must run first to give this analysis the embedding ``name``: the embed step when
        the study has no embedding of that name but captions, and ``name`` is one the embed step computes
        (not yet in the results folder); else none."""
        if name in self.study.stimuli.embeddings or name not in embed_step_names(self):
            return ()
        if not any(any(str(c).strip() for c in caps) for caps in self.study.stimuli.captions):
            return ()  # nothing to compute it from: the step that uses it says so (missing_embedding)
        if name in stored_embedding_names(self.store):
            return ()  # a resumed analysis: read back from the results folder
        return (EMBED_STEP,)

    def rng(self, *keys: int | str) -> np.random.Generator:
        """A generator seeded from the analysis seed and ``keys`` (stable across runs and processes)."""
        import zlib

        words = [self.random_state] + [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
        return np.random.default_rng(words)


def embed_step_names(ctx: AnalysisContext) -> list[str]:
    """Names of the embeddings the embed step computes with this analysis's parameters (the caption
    embedding first, then the word-level controls)."""
    from .alignment.steps import EmbedParams, caption_embedding_name

    params = ctx.step_params(EMBED_STEP, EmbedParams)
    return [caption_embedding_name(ctx.study, params), *params.controls]


def _stored_embeddings(store: ResultsStore | None) -> pd.DataFrame | None:
    """The table of the embeddings the embed step saved in a results folder (None before it finished)."""
    if store is None or not store.is_done(EMBED_STEP):
        return None
    try:
        return store.read_table(_EMBED_TABLE)
    except InputError:
        return None


def stored_embedding_names(store: ResultsStore | None) -> list[str]:
    """Names of the embeddings the embed step saved in a results folder (none before it finished)."""
    table = _stored_embeddings(store)
    return [] if table is None else [str(n) for n in table["name"]]


def stored_embedding(store: ResultsStore | None, name: str) -> Embedding | None:
    """Embedding ``name`` as the embed step saved it in a results folder (``arrays/alignment_embeddings.npz``
    and ``tables/alignment_embeddings.tsv``), or None when the step has not finished there or did not
    compute it."""
    table = _stored_embeddings(store)
    if table is None:
        return None
    rows = table[table["name"].astype(str) == name]
    if rows.empty:
        return None
    try:
        values = store.read_arrays(_EMBED_TABLE)[name]
    except (InputError, KeyError):
        return None
    row = rows.iloc[0]
    return Embedding(name, np.asarray(values), model=str(row["model"]), kind=str(row["kind"]), normalized=False)


def missing_embedding(ctx: AnalysisContext, name: str, param: str | None = None) -> InputError:
    """The error for a step whose embedding ``name`` the analysis does not have, with the fixes that apply."""
    study = ctx.study
    have = list(study.stimuli.embeddings)
    has_captions = any(any(str(c).strip() for c in caps) for caps in study.stimuli.captions)
    computed = name in embed_step_names(ctx)
    fixes = []
    if have:
        fixes.append(f"choose one of {', '.join(have)}" + (f" with --param {param}=NAME (e.g. --param "
                                                           f"{param}={have[0]})" if param else ""))
    if computed and has_captions:
        fixes.append("run the embed step first, which computes it from the captions")
    elif computed:
        fixes.append("add caption_1, caption_2, … columns to stimuli.tsv (the embed step computes "
                     f"{name!r} from them)")
    fixes.append(f"save a precomputed embedding as embeddings/{name}.npy in the study folder")
    fix = fixes[0] if len(fixes) == 1 else f"{', '.join(fixes[:-1])}, or {fixes[-1]}"
    problem = f"has no embedding {name!r}"
    if computed and not has_captions:
        problem += " and no captions to compute it from (no caption_N columns in stimuli.tsv)"
    return InputError(f"study {study.name}", problem, fix)
