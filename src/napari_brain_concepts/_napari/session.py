"""One analysis session per viewer, shared by the dock widgets.

The session holds the study, the participant on show and the :class:`AnalysisContext` (results store and the
fitted objects of finished steps). Widgets read it and listen to its signals; none of them computes.
"""

from __future__ import annotations

import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal

if TYPE_CHECKING:
    from ..core.context import AnalysisContext
    from ..core.study import Study


class AnalysisSession:
    """Study + participant + analysis context of one viewer."""

    study_changed = Signal(object)
    subject_changed = Signal(str)
    step_finished = Signal(str)

    def __init__(self):
        self.study: Study | None = None
        self.subject: str | None = None
        self.concept: str | None = None  # the basis concept selected in the Concepts widget
        self.context: AnalysisContext | None = None
        self.results_dir: Path | None = None
        self.random_state: int = 0
        self.device: str = "auto"
        self._tmp: tempfile.TemporaryDirectory | None = None

    def set_study(self, study: Study, results_dir: str | Path | None = None) -> None:
        self.study = study
        self.concept = None
        self.context = None
        self.results_dir = Path(results_dir) if results_dir else None
        self.subject = study.subject_names[0]
        self.study_changed.emit(study)

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
        current = self.context.params if self.context is not None else {}
        # a widget's form sets the values it shows; the step's other values stay
        merged = {step: {**(current.get(step) or {}), **values} for step, values in (params or {}).items()}
        check_params(merged, types=False)
        if self.context is None:
            if self.results_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="brain-concepts-")
                self.results_dir = Path(self._tmp.name) / "results"
            # an opened results folder is continued (its finished results stay); a new one is created
            store = ResultsStore.create(self.results_dir, parameters=None, study=self.study.name, resume=True,
                                        fingerprint=self.study.fingerprint())
            self.context = AnalysisContext(study=self.study, store=store, params={},
                                           random_state=self.random_state, device=self.device)
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
