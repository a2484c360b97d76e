"""The steps of a full analysis, in order, each a generator that yields Progress and can be stopped.

A step is ``fn(ctx: AnalysisContext) -> Generator[Progress, None, None]``. It reads the study and what earlier
steps left in ``ctx.state``, writes its results to ``ctx.store`` (atomically) and marks itself done there.
Steps live beside the science they run (``decoding/steps.py``, ``concepts/steps.py`` …); this module only
knows their order and dependencies, so the CLI, the Python API and the widgets run exactly the same code.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .context import AnalysisContext
from .errors import InputError, check_choices, check_ranges
from .progress import Progress


@dataclass(frozen=True)
class StepSpec:
    name: str
    target: str  # "module:function", imported when the step runs
    requires: tuple[str, ...] = ()
    help: str = ""
    optional: bool = False  # not part of a whole analysis unless asked for (needs parameters)
    params: str = ""  # "module:Class" of the step's parameter dataclass
    # "module:function" (ctx → None, or why the step cannot apply to this study: a text, or the InputError the
    # step would raise, which a request for the step by name raises before any step runs)
    applies: str = ""
    needs: str = ""  # "module:function" (ctx → the steps it needs on this study beyond ``requires``)

    def function(self) -> Callable[[AnalysisContext], Generator[Progress, None, None]]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module, __package__), func)

    def not_applicable(self, ctx: AnalysisContext) -> str | None:
        """Why this step cannot run on ``ctx.study`` (e.g. too few participants), or None."""
        why = self._applies(ctx)
        return why.problem if isinstance(why, InputError) else why

    def check_applies(self, ctx: AnalysisContext) -> None:
        """Raise the step's own error when it cannot run on ``ctx.study`` and its ``applies`` hook gives that
        error (maps on a study without categories, image-models on one without images)."""
        why = self._applies(ctx)
        if isinstance(why, InputError):
            raise why

    def _applies(self, ctx: AnalysisContext) -> InputError | str | None:
        if not self.applies:
            return None
        module, func = self.applies.split(":")
        return getattr(importlib.import_module(module, __package__), func)(ctx)

    def requirements(self, ctx: AnalysisContext | None = None) -> tuple[str, ...]:
        """The steps this one needs: ``requires``, and with ``ctx`` those its ``needs`` hook adds for
        ``ctx.study`` (decode needs the embed step on a study without its own caption embedding)."""
        if ctx is None or not self.needs:
            return self.requires
        module, func = self.needs.split(":")
        extra = getattr(importlib.import_module(module, __package__), func)(ctx)
        return (*self.requires, *(s for s in extra if s not in self.requires))

    def params_class(self) -> type:
        module, cls = self.params.split(":")
        return getattr(importlib.import_module(module, __package__), cls)


_STEP_LIST = [
    StepSpec("clip", ".embeddings.clip:clip_step", (),
             "CLIP image/caption embeddings from a local open_clip or Hugging Face checkpoint", optional=True,
             params=".embeddings.clip:ClipParams"),
    StepSpec("decode", ".decoding.steps:decode_step", (),
             "fit a brain→embedding decoder per subject; retrieval scores",
             params=".decoding.steps:DecodeParams", needs=".decoding.steps:needs"),
    StepSpec("maps", ".concepts.category_maps:maps_step", ("decode",),
             "per-concept brain maps (correlation and decoder maps per category; on a synthetic study, their "
             "overlap with the planted regions)",
             params=".concepts.category_maps:MapsParams", applies=".concepts.category_maps:not_applicable"),
    StepSpec("concepts", ".concepts.steps:concepts_step", ("decode",),
             "concept basis of the decodable embedding directions, with names",
             params=".concepts.steps:ConceptsParams"),
    StepSpec("masks", ".concepts.steps:masks_step", ("decode", "concepts"),
             "voxel masks per subject and concept",
             params=".concepts.steps:MasksParams"),
    StepSpec("shared", ".concepts.shared_steps:shared_step", ("decode",),
             "concepts shared across participants; localizer validation",
             params=".concepts.shared_steps:SharedParams", applies=".concepts.shared_steps:not_applicable"),
    StepSpec("embed", ".alignment.steps:embed_step", (),
             "caption embeddings and word-level control embeddings",
             params=".alignment.steps:EmbedParams"),
    StepSpec("rsa", ".alignment.steps:rsa_step", ("embed",),
             "RSA of every model with every ROI, and searchlight maps",
             params=".alignment.steps:RsaParams"),
    StepSpec("encode", ".alignment.steps:encode_step", ("embed",),
             "encoding models embedding→voxels: r maps",
             params=".alignment.steps:EncodeParams"),
    StepSpec("captions", ".alignment.image_steps:captions_step", (),
             "caption reconstruction from brain activity",
             params=".alignment.image_steps:CaptionsParams"),
    StepSpec("image-models", ".alignment.image_steps:image_models_step", ("embed",),
             "image→caption-embedding networks vs other image models",
             params=".alignment.image_steps:ImageModelsParams",
             applies=".alignment.image_steps:not_applicable"),
]
STEPS: dict[str, StepSpec] = {s.name: s for s in _STEP_LIST}
STEP_ORDER: list[str] = [s.name for s in _STEP_LIST]
DEFAULT_STEPS: list[str] = [s.name for s in _STEP_LIST if not s.optional]


def with_requirements(steps: Iterable[str], ctx: AnalysisContext | None = None) -> list[str]:
    """``steps`` and every step they depend on, in pipeline order, each after the steps it needs.

    Without ``ctx`` a step needs its ``requires``; with ``ctx`` also the steps its ``needs`` hook names for
    ``ctx.study`` (decode on a study without its own caption embedding needs the embed step, which then runs
    before it although it comes later in :data:`STEP_ORDER`).
    """
    required: dict[str, tuple[str, ...]] = {}

    def add(name: str) -> None:
        if name not in STEPS:
            raise InputError("steps", f"unknown step {name!r}", f"choose from {', '.join(STEP_ORDER)}")
        if name in required:
            return
        required[name] = STEPS[name].requirements(ctx)
        for req in required[name]:
            add(req)

    for s in steps:
        add(s)
    order: list[str] = []

    def place(name: str) -> None:
        if name not in order:
            for req in required[name]:
                place(req)
            order.append(name)

    for s in STEP_ORDER:
        if s in required:
            place(s)
    return order


def check_params(params: Mapping[str, Any], *, types: bool = True) -> None:
    """Fail fast on parameters no step can use: unknown step names, unknown parameter names, values of the
    wrong type (with ``types``) and numbers outside their step's ranges (``RANGES`` of its parameter class,
    made from :mod:`.ranges`).

    ``params`` maps a step name to a dict of parameter values (or to the step's parameter dataclass). Errors
    name a parameter as a user gives it: ``parameter masks.sparsity: -1 is outside [0.0, inf)``. The CLI
    runs this on its ``--param`` values before it reads the study, :func:`run_analysis` before its first step
    (numpy numbers count as numbers), the napari session before it takes a widget's values; the ranges are
    checked again when a step starts, the names when it reads them.
    """
    for step, values in params.items():
        if step not in STEPS:
            head, _, name = str(step).partition(".")
            if head in STEPS and name:  # the command line's form, given from Python
                raise InputError(f"parameters of step {step!r}", "name a step and a parameter together",
                                 f"give them per step, e.g. params={{{head!r}: {{{name!r}: ...}}}}")
            raise InputError(f"parameters of step {step!r}", "no step has that name",
                             f"choose from {', '.join(STEP_ORDER)}")
        cls = STEPS[step].params_class()
        if isinstance(values, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = set(values) - names
            if unknown:
                raise InputError(f"parameters of step {step!r}", f"unknown names {sorted(unknown)}",
                                 f"use some of {sorted(names)}")
            hints = typing.get_type_hints(cls) if types else {}
            for name, value in values.items():
                kind = hints.get(name)
                if kind is not None and not _conforms(value, kind):
                    raise InputError(f"parameter {step}.{name}", f"{value!r} is not {_describe(kind)}",
                                     f"give it as JSON, e.g. --param '{step}.{name}={_example(kind)}'")
        check_ranges(values, getattr(cls, "RANGES", {}), prefix=f"{step}.")
        check_choices(values, getattr(cls, "CHOICES", {}), prefix=f"{step}.")


def _arms(kind) -> tuple:
    return typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)


def _given(values: Any, spec: StepSpec) -> dict[str, Any]:
    """The parameter values given for a step (a dict, or the fields of its dataclass that differ from the
    defaults), as the manifest records them."""
    if values is None:
        return {}
    if dataclasses.is_dataclass(values):
        default = spec.params_class()()
        return {f.name: getattr(values, f.name) for f in dataclasses.fields(values)
                if getattr(values, f.name) != getattr(default, f.name)}
    return dict(values)


def _conforms(value: Any, kind: Any) -> bool:
    """Whether a parameter value (as JSON or Python gives it: numpy numbers too) fits a dataclass field's type
    (numbers, text, lists)."""
    if isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    for arm in _arms(kind):
        origin, args = typing.get_origin(arm), typing.get_args(arm)
        if arm is type(None):
            ok = value is None
        elif arm is bool:
            ok = isinstance(value, bool)
        elif arm is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif arm is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif arm is str:
            ok = isinstance(value, str)
        elif origin in (tuple, list):
            if origin is list or len(args) == 1 or args[1:] == (Ellipsis,):  # list[X], tuple[X, ...]
                args = (args[0],) * len(value) if isinstance(value, (list, tuple)) else args
            ok = isinstance(value, (list, tuple)) and len(value) == len(args) and all(
                _conforms(v, t) for v, t in zip(value, args))
        else:
            ok = True  # dicts and other structures: checked by the step
        if ok:
            return True
    return False


def _describe(kind: Any) -> str:
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a text",
             type(None): "null"}
    parts = []
    for arm in _arms(kind):
        if typing.get_origin(arm) in (tuple, list):
            parts.append(f"a list of {_describe(typing.get_args(arm)[0]).removeprefix('a ')}s")
        else:
            parts.append(words.get(arm, str(arm)))
    return " or ".join(parts)


def _example(kind: Any) -> str:
    arm = next(a for a in _arms(kind) if a is not type(None))
    if typing.get_origin(arm) in (tuple, list):
        return "[" + ",".join([_example(typing.get_args(arm)[0])] * 2) + "]"
    return {bool: "true", int: "5", float: "0.5", str: '"NAME"'}.get(arm, "...")


def run_analysis(ctx: AnalysisContext, steps: Iterable[str] | None = None, resume: bool = False,
                 leave_out: bool | None = None) -> Generator[Progress, None, AnalysisContext]:
    """Run ``steps`` (default: all) and the steps they need; yields Progress from every step.

    A whole analysis (``steps`` None, or ``leave_out`` true) leaves out the steps that cannot apply to the
    study (``shared`` on a study with too few participants, ``maps`` without stimulus categories,
    ``image-models`` without images), says why in a Progress message and in ``ctx.state["skipped_steps"]``;
    otherwise a step asked for by name fails with a clear error, before any step runs where its ``applies``
    hook gives that error.

    The steps a step needs can depend on the study (:func:`with_requirements` with ``ctx``): on a study
    without its own caption embedding, the embed step runs before decode and computes it from the captions.

    The parameters are checked first (:func:`check_params`: every step name given, and the names, types and
    ranges of the steps to run), so that a misspelt step fails instead of running with its defaults, and a
    value out of range fails before the steps ahead of its own have run. Each finished step's values (and the
    seed) are recorded in the manifest (:meth:`ResultsStore.record_parameters`), so that a later ``--resume``
    is checked against them.

    A required step that already finished in this context (its fitted objects are in ``ctx.state``) is not
    run again; the requested steps always run. Each step writes into a staging folder that reaches the results
    folder only when the step finishes, so a cancelled or failed step leaves no partial result.

    With ``resume``, steps the results folder lists as finished are kept: they are skipped, except that one a
    pending step depends on is rerun in memory only (its files are neither rewritten nor re-marked), so that
    the pending step finds its fitted objects.
    """
    requested = list(DEFAULT_STEPS if steps is None else steps)
    if steps is None if leave_out is None else leave_out:  # a whole analysis leaves out what cannot apply
        skipped = ctx.state.setdefault("skipped_steps", {})
        for name in list(requested):
            reason = STEPS[name].not_applicable(ctx)
            if reason:
                skipped[name] = reason
                requested.remove(name)
                yield Progress("analysis", 0, 1, f"leaving out step {name}: {reason}")
    finished = ctx.state.setdefault("finished_steps", [])
    order = [s for s in with_requirements(requested, ctx) if s in requested or s not in finished]
    for name in order:  # left out by an earlier run of this analysis (other values), it runs now
        ctx.state.get("skipped_steps", {}).pop(name, None)
    in_memory: set[str] = set()
    if resume:
        pending = [s for s in order if not ctx.store.is_done(s)]
        needed = set(with_requirements(pending, ctx)) - set(pending)
        in_memory = {s for s in needed if s not in finished}
        order = [s for s in order if s in pending or s in in_memory]
    # every name is checked (a misspelt step would otherwise run with its defaults); values of the steps to run
    check_params({s: v for s, v in ctx.params.items() if s not in STEPS or s in order})
    for name in requested:  # a step asked for by name that cannot apply fails before the steps it needs run
        if name in order:
            STEPS[name].check_applies(ctx)
    for i, name in enumerate(order):
        yield Progress("analysis", i, len(order), f"step {name}" + (" (in memory)" if name in in_memory else ""))
        # a step rerun in memory for a pending one may read back what it saved (the decoders' weights)
        ctx.state["in_memory_step"] = name if name in in_memory else None
        try:
            with ctx.store.staged(name, commit=name not in in_memory):
                yield from STEPS[name].function()(ctx)
        finally:
            ctx.state.pop("in_memory_step", None)
        if name not in in_memory:
            ctx.store.record_parameters(name, _given(ctx.params.get(name), STEPS[name]), ctx.random_state,
                                        asked=name in requested)
        if name not in finished:
            finished.append(name)
    yield Progress("analysis", len(order), len(order), "done")
    return ctx


def step_values(step: str, given: Any) -> dict[str, Any]:
    """Every value of ``step`` (its defaults, overlaid with ``given``), as JSON gives them back."""
    import json

    from .io.results import _jsonable

    values = dataclasses.asdict(STEPS[step].params_class()())
    values.update(_given(given, STEPS[step]))
    return json.loads(json.dumps(_jsonable(values)))


def check_continuable(ctx: AnalysisContext, steps: Iterable[str], fix: str) -> None:
    """Refuse to continue the analysis in ``ctx.store`` (``run_analysis(..., resume=True)``) where a finished
    step among ``steps`` and the steps they need would run with other values than it finished with, or with
    another seed: resuming keeps finished steps, so the new values would silently not apply (and a step that
    reruns in memory for a pending one would no longer match its files). ``fix`` says what to do instead.
    """
    recorded = ctx.store.manifest.get("parameters")
    if not (isinstance(recorded, dict) and isinstance(recorded.get("params"), dict)):
        return
    finished = [s for s in with_requirements(list(steps), ctx) if ctx.store.is_done(s)]
    changed = []
    seed = recorded.get("seed")
    if finished and seed is not None and int(seed) != int(ctx.random_state):
        changed.append(f"seed {seed} (now {ctx.random_state})")
    for step in finished:
        before, now = step_values(step, recorded["params"].get(step)), step_values(step, ctx.params.get(step))
        changed += [f"{step}.{k}={before[k]!r} (now {now[k]!r})" for k in before if before[k] != now.get(k)]
    if changed:
        raise InputError(ctx.store.root / "manifest.json",
                         f"holds finished steps made with other values: {', '.join(changed)}", fix)
