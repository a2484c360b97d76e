"""Base of the dock widgets that run an analysis step: parameters, Run, Cancel, progress, result hook.

A subclass names its steps and builds its parameter form; running a step starts the core generator
(:func:`napari_brain_concepts.core.pipeline.run_analysis`) in a napari worker, mirrors its
:class:`~napari_brain_concepts.core.progress.Progress` in a napari progress bar, and on the main thread hands
the finished context to :meth:`StepWidget.on_finished`. Cancel closes the generator: the step stops at its next
yield, and nothing it had staged reaches the results folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from . import workers
from .session import get_session

if TYPE_CHECKING:
    import napari


class _VerticalScroll(QScrollArea):
    """Scrolls vertically only; as wide as its contents need (no horizontal scroll bar), and as tall as they
    would like to be where there is room."""

    def sizeHint(self):
        hint = super().sizeHint()
        if self.widget() is not None:
            inner = self.widget().sizeHint()
            hint.setWidth(inner.width() + self.verticalScrollBar().sizeHint().width())
            hint.setHeight(inner.height())
        return hint

    def minimumSizeHint(self):
        hint = super().minimumSizeHint()
        if self.widget() is not None:
            hint.setWidth(self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width())
        return hint


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """The layout of ``widget``'s contents, inside a vertical scroll area: docks stacked in one napari window
    then share its height (the plugin's six docks in one column needed a window 2,054 px tall)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame

    inner = QWidget()
    scroll = _VerticalScroll()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(inner)


class StepWidget(QWidget):
    """Run ``steps`` of the pipeline for the session's study from a dock widget."""

    steps: tuple[str, ...] = ()
    run_label = "Run"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.worker = None
        self._progress = None
        self._failed = False
        self._opening = False  # showing the results of a study just loaded: the Study widget shows its map
        self.run_button = QPushButton(self.run_label)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.form = QVBoxLayout()
        layout = scrolling_layout(self)
        layout.addLayout(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self.body = QVBoxLayout()
        layout.addLayout(self.body)
        layout.addStretch(1)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.session.study_changed.connect(self._on_study_changed)
        self.session.subject_changed.connect(self._on_subject_changed)

    # -- for subclasses ----------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """Step parameters from the form: ``{step: {name: value}}``."""
        return {}

    def show_results(self, store) -> None:
        """Main thread: show the results of this widget's steps found in ``store`` (a ResultsStore)."""

    def on_finished(self, ctx) -> None:
        """Main thread, after the steps finished: show their results."""
        self.show_results(ctx.store)

    def on_subject_changed(self, name: str) -> None:
        """Main thread: the participant on show changed."""

    def on_study_changed(self, study) -> None:
        """Main thread: a new study was loaded."""

    # -- running -----------------------------------------------------------------------------------
    def run(self, steps: tuple[str, ...] | None = None):
        from ..core.pipeline import run_analysis

        try:
            ctx = self.session.ensure_context(self.parameters())
        except Exception as exc:  # shown as one notification
            workers.notify_error(exc)
            return None
        todo = list(steps or self.steps)
        self._failed = False
        self._set_running(True, f"Running {', '.join(todo)} …")
        from napari.utils import progress

        self._progress = progress(total=0, desc=", ".join(todo))
        self.worker = workers.start(run_analysis, ctx, todo, on_yield=self._on_progress,
                                    on_return=self._on_return, on_error=self._on_error,
                                    on_finish=self._on_finish)
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("Cancelling …")

    def _on_progress(self, p) -> None:
        if self._failed:
            return  # a report queued before the error must not hide it
        # the text first: updating the bar may process queued events (the step's error, its end), whose
        # handlers must have the last word
        self.status.setText(f"{p.step}: {p.message}")
        bar = self._progress  # a local: those events may close the bar
        if bar is not None:
            if p.total and bar.total != p.total:
                bar.total = p.total
            bar.n = p.done
            bar.set_description(f"{p.step}: {p.message}"[:80])
            bar.refresh()

    def _on_return(self, ctx) -> None:
        from .display import refresh_results

        self.status.setText("Done.")
        refresh_results(self.viewer, self.session)
        for s in self.steps:
            self.session.step_finished.emit(s)
        self.on_finished(ctx)

    def _on_error(self, exc: BaseException) -> None:
        self._failed = True
        self.status.setText("Stopped with an error (see the notification).")
        workers.notify_error(exc)

    def _on_finish(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self.worker is not None and getattr(self.worker, "abort_requested", False):
            self.status.setText("Cancelled; nothing of the step was written.")
        self.worker = None
        self._set_running(False)

    def _set_running(self, running: bool, message: str | None = None) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if message:
            self.status.setText(message)

    def _on_study_changed(self, study) -> None:
        self.on_study_changed(study)
        store = self.results_store()
        if store is not None and all(store.is_done(s) for s in self.steps):
            # the Study widget shows the participant's default map next: no map is loaded here
            self._opening = True
            try:
                self.show_results(store)
            except Exception as exc:  # a results folder of another layout: say so once
                workers.notify_error(exc)
            finally:
                self._opening = False

    def results_store(self):
        """The session's results folder, when it holds results."""
        from ..core.io.results import ResultsStore

        root = self.session.results_dir
        return ResultsStore.open(root) if root is not None and ResultsStore.is_results(root) else None

    def _on_subject_changed(self, name: str) -> None:
        self.on_subject_changed(name)

    def show_layer(self, name: str) -> None:
        """Show layer ``name`` of the participant on show (``name`` alone: a layer of all participants) and
        select it, loading it from the results folder when the viewer does not hold it yet; a map is shown
        alone (:func:`~napari_brain_concepts._napari.display.show_alone`). The participant's layer comes
        first when both exist."""
        from .display import load_results_layers, results_entries, show_alone

        full = f"{self.session.subject} {name}"
        wanted = [e for e, (_, _, _, layer_name) in results_entries(self.session).items()
                  if layer_name in (name, full)]
        if wanted and not self._opening:
            load_results_layers(self.viewer, self.session, wanted)
        for candidate in (full, name):
            if candidate in self.viewer.layers:
                show_alone(self.viewer, self.viewer.layers[candidate])
                return
