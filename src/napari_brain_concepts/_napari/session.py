"""One analysis session per viewer, shared by the dock widgets.

The session holds the study, the participant on show and the :class:`AnalysisContext` (results store and the
fitted objects of finished steps). Widgets read it and listen to its signals; none of them computes.
"""

from __future__ import annotations

import copy
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal

if TYPE_CHECKING:
    from ..core.context import AnalysisContext
    from ..core.study import Study


def recorded_origin(manifest: dict[str, Any]) -> bool:
    """Whether a results folder's manifest says which study it was made from."""
    return any(key in manifest for key in ("study_path", "nsd_root", "synthetic_size"))


class AnalysisSession:
    """Study + participant + analysis context of one viewer."""

    study_changed = Signal(object)
    subject_changed = Signal(str)
    step_finished = Signal(str)
    #: a results folder was opened over the study on show (its path)
    results_changed = Signal(object)
    #: a step started (True) or ended (False): one step runs at a time, on one results folder
    busy_changed = Signal(bool)

    def __init__(self):
        self.study: Study | None = None
        self.subject: str | None = None
        self.concept: str | None = None  # the basis concept selected in the Concepts widget
        self.context: AnalysisContext | None = None
        self.results_dir: Path | None = None
        self.random_state: int = 0
        self.device: str = "auto"
        self.busy = False
        self._tmp: tempfile.TemporaryDirectory | None = None
        #: the temporary results folders of earlier analyses of this viewer that finished steps: kept until
        #: napari closes (opening a study again must not delete hours of NSD decoding), and said where they are
        self.earlier_results: list[Path] = []
        self._earlier_tmps: list[tempfile.TemporaryDirectory] = []
        self.origin: dict[str, Any] = {}  # how to find the study on show again (see set_study)

    def _leave_temporary(self) -> None:
        """The analysis leaves the session's temporary folder: kept (and said) when it finished steps."""
        if self._tmp is not None and self.context is not None and self.context.store.finished_steps \
                and not self.continues_results:
            self._earlier_tmps.append(self._tmp)  # its TemporaryDirectory removes it when napari closes
            self.earlier_results.append(Path(self._tmp.name) / "results")
        self._tmp = None

    def set_study(self, study: Study, results_dir: str | Path | None = None,
                  origin: dict[str, Any] | None = None) -> None:
        """Show ``study`` (a new analysis, or the one in ``results_dir``). ``origin``: how to find the study again
        (the manifest keys of the command line: ``study_path``, ``synthetic_size``/``synthetic_seed``,
        ``nsd_*``), recorded in the results folder the session creates, so that a copy of it opens on its own."""
        self._leave_temporary()
        self.origin = dict(origin or {})
        self.study = study
        self.concept = None
        self.context = None
        self.results_dir = Path(results_dir) if results_dir else None
        self.subject = study.subject_names[0]
        self.study_changed.emit(study)

    def open_results(self, path: str | Path) -> None:
        """Continue the analysis in results folder ``path`` (of the study on show): the docks show its results."""
        own = Path(self._tmp.name) if self._tmp is not None else None
        if own is None or own not in Path(path).parents:  # not the session's own folder opened again
            self._leave_temporary()
        self.results_dir = Path(path)
        self.concept = None
        self.context = None
        self.results_changed.emit(self.results_dir)

    def set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.busy_changed.emit(busy)

    @property
    def continues_results(self) -> bool:
        """Whether the analysis goes on in a results folder the user opened (not the session's temporary
        one): its finished steps are kept, as ``--resume`` keeps them, and are never run again with other
        values."""
        if self.results_dir is None:
            return False
        own = Path(self._tmp.name) if self._tmp is not None else None
        return own is None or own not in self.results_dir.parents

    @property
    def temporary_results(self) -> Path | None:
        """The session's own temporary results folder, when the analysis writes there (removed when napari
        closes), else None."""
        return self.results_dir if self.results_dir is not None and not self.continues_results else None

    def recorded_parameters(self) -> dict[str, Any] | None:
        """The parameters the opened results folder records (``{"params": {step: {...}}, "seed", ...}``), or
        ``None`` (no results folder, or one that records none)."""
        from ..core.io.results import ResultsStore

        root = self.results_dir
        if root is None or not ResultsStore.is_results(root):
            return None
        recorded = ResultsStore.open(root).manifest.get("parameters")
        return recorded if isinstance(recorded, dict) and isinstance(recorded.get("params"), dict) else None

    def current_params(self) -> dict[str, Any]:
        """``{step: {name: value}}`` the next run starts from: the context's, else the results folder's."""
        if self.context is not None:
            return self.context.params
        recorded = self.recorded_parameters()
        return recorded["params"] if recorded else {}

    def set_subject(self, name: str) -> None:
        if name != self.subject:
            self.subject = name
            self.subject_changed.emit(name)

    def ensure_context(self, params: dict[str, Any] | None = None) -> AnalysisContext:
        """The analysis context, created on first use with a results folder (a temporary one by default).

        ``params`` (``{step: {name: value}}``, a widget's form) are checked first, names and ranges
        (:func:`~napari_brain_concepts.core.pipeline.check_params`): a value out of range is refused before
        anything runs, and the context keeps the values it had."""
        from ..core.context import AnalysisContext
        from ..core.errors import InputError
        from ..core.io.results import ResultsStore
        from ..core.pipeline import check_params

        if self.study is None:
            raise InputError("Study widget", "no study is loaded", "open a study folder or the synthetic study first")
        current = self.current_params()
        # a widget's form sets the values it shows; the step's other values stay
        merged = {step: {**(current.get(step) or {}), **values} for step, values in (params or {}).items()}
        check_params(merged, types=False)
        if self.context is None:
            recorded = self.recorded_parameters()
            if self.results_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="brain-concepts-")
                self.results_dir = Path(self._tmp.name) / "results"
            # an opened results folder is continued (its finished results stay); a new one is created
            store = ResultsStore.create(self.results_dir, parameters=None, study=self.study.name, resume=True,
                                        fingerprint=self.study.fingerprint())
            if self.origin and not recorded_origin(store.manifest):  # a copy of the folder finds its study
                store.update(**self.origin)
            # with the values and the seed its results were made with: a step they need reruns as it ran
            seed = recorded.get("seed") if recorded else None
            self.context = AnalysisContext(study=self.study, store=store,
                                           params=copy.deepcopy(recorded["params"]) if recorded else {},
                                           random_state=self.random_state if seed is None else int(seed),
                                           device=self.device)
        self.context.params.update(merged)
        return self.context

    def done(self, step: str) -> bool:
        return self.context is not None and self.context.store.is_done(step)


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_session(viewer) -> AnalysisSession:
    """The session of ``viewer`` (created on first use)."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = AnalysisSession()
        _SESSIONS[viewer] = session
    return session
