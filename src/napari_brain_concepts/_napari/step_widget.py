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
    """Scrolls vertically; as wide as its contents need and as tall as they would like to be where there is
    room (a dock made narrower than its contents scrolls sideways too, instead of cutting them off)."""

    def sizeHint(self):
        hint = super().sizeHint()
        if self.widget() is not None:
            inner = self.widget().sizeHint()
            hint.setWidth(inner.width() + self._edges())
            hint.setHeight(inner.height() + 2 * self.frameWidth())
        return hint

    def minimumSizeHint(self):
        hint = super().minimumSizeHint()
        if self.widget() is not None:
            hint.setWidth(self.widget().minimumSizeHint().width() + self._edges())
        return hint

    def _edges(self) -> int:
        """Width besides the contents: the vertical scroll bar and the frame (napari's style sheet draws one
        even with no frame shape; uncounted, a dock at its narrowest scrolled sideways by those 2 pixels)."""
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()


def scrolling_layout(widget: QWidget, first: bool = False) -> QVBoxLayout:
    """The layout of ``widget``'s contents, inside a vertical scroll area: docks stacked in one napari window
    then share its height (the plugin's six docks in one column needed a window 2,054 px tall), as
    :mod:`.docking` shares it out when the dock is first shown (``first``: this dock's share comes first)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame

    inner = QWidget()
    scroll = _VerticalScroll()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    scroll.setWidget(inner)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    from .docking import share_height_when_shown

    share_height_when_shown(widget, first)
    return QVBoxLayout(inner)


class StepWidget(QWidget):
    """Run ``steps`` of the pipeline for the session's study from a dock widget."""

    steps: tuple[str, ...] = ()
    #: the steps whose results the dock shows (default: all of ``steps``); they are shown once finished
    shows: tuple[str, ...] | None = None
    run_label = "Run"
    #: ``step.parameter`` → the form's label for it, so that what the core says of a value (a step left out
    #: for ``shared.min_participants=3``) names the field the user sees
    field_labels: dict[str, str] = {}

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.worker = None
        self._progress = None
        self._failed = False
        self._opening = False  # showing the results of a study just loaded: the Study widget shows its map
        self._joining = False  # a dock added after the study was loaded shows its results, not its layers
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
        self.body = QVBoxLayout()
        layout.addLayout(self.body)
        layout.addStretch(1)
        # Run, Cancel and the status below the scroll area, in sight however short the dock (six docks stacked
        # in one column give each about 130 px: the form scrolls, and a run's progress and outcome still show)
        footer = QWidget()
        fixed = QVBoxLayout(footer)
        fixed.setContentsMargins(9, 4, 9, 6)
        fixed.addLayout(buttons)
        fixed.addWidget(self.status)
        self.layout().addWidget(footer)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.run_buttons = [self.run_button]  # every button that starts a step (off while any step runs)
        self._todo: list[str] = []  # the steps of the run under way, or of the last one
        self._kept: list[str] = []  # the steps a run found finished in an opened results folder
        self._before: set[str] = set()  # the steps finished when the run started
        self._form_shows = None  # (the form's values, the recorded ones) after an opened folder filled it
        self.session.study_changed.connect(self._on_study_changed)
        self.session.results_changed.connect(self._on_results_changed)
        self.session.subject_changed.connect(self._on_subject_changed)
        self.session.busy_changed.connect(self._on_busy)

    # -- for subclasses ----------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """Step parameters from the form: ``{step: {name: value}}``."""
        return {}

    def show_results(self, store) -> None:
        """Main thread: show the results of this widget's steps found in ``store`` (a ResultsStore)."""

    def on_finished(self, ctx) -> None:
        """Main thread, after the steps finished: show their results."""
        self.show_results(ctx.store)

    def outcome(self, ctx) -> str:
        """Main thread, after the steps finished: what they found, for the status line after "Done." (" 0 shared
        concepts …"), where the results on show may not say it; "" when there is nothing to say."""
        return ""

    def on_subject_changed(self, name: str) -> None:
        """Main thread: the participant on show changed."""

    def in_form_words(self, text: str) -> str:
        """``text`` with each ``step.parameter=value`` of :attr:`field_labels` written as the form's field:
        ``'Shared by (others)' = 3``."""
        import re

        def field(match):
            label = self.field_labels.get(match.group(1))
            return f"'{label}' = {match.group(2)}" if label else match.group(0)

        return re.sub(r"\b(\w+\.\w+)=([^\s,;)]+)", field, text)

    def join_session(self) -> None:
        """The end of a subclass's ``__init__``: a dock added after a study (or a results folder) was loaded fits
        its form to the study, shows the values the opened folder was made with and the finished results of
        its steps in the dock, as the docks present at loading do, but leaves the layers and the map on show
        as they are; and its buttons are off while a step runs."""
        if self.session.study is not None:
            self.on_study_changed(self.session.study)
            self._fill_form()
            self._joining = True
            try:
                self._show_finished(self.results_store(), opening=True)
            finally:
                self._joining = False
        self._on_busy(self.session.busy)

    def on_study_changed(self, study) -> None:
        """Main thread: a new study was loaded."""

    def clear_results(self) -> None:
        """Main thread: forget the results on show (another study or results folder comes)."""

    def set_form(self, params: dict[str, dict[str, Any]]) -> None:
        """Main thread: show ``{step: {name: value}}`` (every value of the dock's steps) in the form."""

    # -- running -----------------------------------------------------------------------------------
    def run(self, steps: tuple[str, ...] | None = None):
        """Run ``steps`` (default: the dock's) in a worker. In a results folder the user opened, the finished
        steps are kept (as ``--resume`` keeps them) and a finished step asked to run with other values is
        refused; in the session's own (temporary) folder the steps run again.

        The dock's own Run, of several steps, leaves out those that cannot apply to the study and says why
        (the Concepts dock on participants on different grids without ``to_common.txt`` finds the concepts
        and masks of each, and not the shared ones), as a whole analysis does; a step run by its own button
        is asked for by name, and one that cannot apply is refused with its error."""
        from ..core.pipeline import STEPS, check_continuable, run_analysis

        todo = list(steps or self.steps)
        leave_out = steps is None and len(todo) > 1
        try:
            if self.session.busy:
                from ..core.errors import InputError

                raise InputError(f"{type(self).__name__}", "another step of this analysis is running",
                                 "wait for it to finish, or cancel it, then run this one")
            before = self.session.current_params()
            before = {step: dict(values) if isinstance(values, dict) else values for step, values in before.items()}
            ctx = self.session.ensure_context(self.form_values())
            resume = self.session.continues_results
            if resume:
                try:
                    check_continuable(ctx, [s for s in todo if not (leave_out and STEPS[s].not_applicable(ctx))],
                                      "set the form back to those values to continue this analysis "
                                      "(its finished steps are kept), or open the study again (Open study "
                                      "folder… or Synthetic study) to start a new analysis with the new values")
                except Exception:
                    ctx.params.clear()  # refused: the analysis keeps the values it had
                    ctx.params.update(before)
                    raise
        except Exception as exc:  # shown as one notification
            workers.notify_error(exc)
            return None
        self._todo = todo
        self._before = {s for s in STEPS if ctx.store.is_done(s)}
        self._kept = [s for s in todo if resume and s in self._before]
        self._failed = False
        self._set_running(True, f"Running {', '.join(todo)} …")
        from napari.utils import progress

        self._progress = progress(total=0, desc=", ".join(todo))
        self.worker = workers.start(run_analysis, ctx, todo, resume=resume, leave_out=leave_out,
                                    on_yield=self._on_progress,
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

        kept = f" Kept from {ctx.store.root}: {', '.join(self._kept)} (finished before)." if self._kept else ""
        left_out = {s: r for s, r in ctx.state.get("skipped_steps", {}).items() if s in self._todo}
        said = "".join(f" Left out {s}: {self.in_form_words(str(r))}." for s, r in left_out.items())
        self.status.setText("Done." + self.outcome(ctx) + kept + said)
        if said:  # the status line may be scrolled out of sight: a notification too
            from napari.utils.notifications import show_warning

            show_warning(said.strip())
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
        cancelled = self.worker is not None and getattr(self.worker, "abort_requested", False)
        self.worker = None
        self._set_running(False)
        if cancelled:
            self._show_cancelled()

    def _show_cancelled(self) -> None:
        """After a cancel: say which steps finished before it (they are in the results folder) and show them."""
        from ..core.pipeline import STEPS
        from .display import refresh_results

        store = self.session.context.store if self.session.context is not None else None
        finished = [s for s in STEPS if store is not None and store.is_done(s) and s not in self._before]
        fitted = store.checkpoints("decode") if store is not None else []
        kept = (f" The decoder{'s' if len(fitted) > 1 else ''} of {', '.join(fitted)} fitted before the cancel "
                f"{'are' if len(fitted) > 1 else 'is'} kept: a Run with the same values starts from "
                f"{'them' if len(fitted) > 1 else 'it'}." if fitted else "")
        # a step run again with other values and cancelled: what the dock shows is still the earlier run's
        earlier = [s for s in self._todo if s in self._before and s in (self.shows or self.steps)]
        if earlier:
            kept += (f" The {', '.join(earlier)} results on show are those of the run before, with the values it "
                     "had.")
        if not finished:
            self.status.setText("Cancelled; nothing of the step was written." + kept)
            return
        self.status.setText(f"Cancelled; {', '.join(finished)} had finished and {'is' if len(finished) == 1 else 'are'}"
                            " kept in the results folder; nothing of the cancelled step was written." + kept)
        refresh_results(self.viewer, self.session)
        for s in finished:
            self.session.step_finished.emit(s)
        self._show_finished(store)

    def _set_running(self, running: bool, message: str | None = None) -> None:
        self.session.set_busy(running)
        self.cancel_button.setEnabled(running)
        if message:
            self.status.setText(message)

    def _on_busy(self, busy: bool) -> None:
        """Every dock's buttons that start a step are off while a step of the session runs."""
        for button in self.run_buttons:
            button.setEnabled(not busy)

    def _show_finished(self, store, opening: bool = False) -> None:
        """Show the results of this dock's finished steps (``shows``); with ``opening``, the Study widget
        shows the participant's default map next, so no map is loaded here."""
        if store is None or not all(store.is_done(s) for s in (self.shows or self.steps)):
            return
        self._opening = opening
        try:
            self.show_results(store)
        except Exception as exc:  # a results folder of another layout: say so once
            workers.notify_error(exc)
        finally:
            self._opening = False

    def _on_study_changed(self, study) -> None:
        self.clear_results()
        self.status.setText("")
        self.on_study_changed(study)
        self._fill_form()
        self._show_finished(self.results_store(), opening=True)

    def _on_results_changed(self, root) -> None:
        self.clear_results()
        self.status.setText("")
        self._fill_form()
        self._show_finished(self.results_store(), opening=True)

    def _fill_form(self) -> None:
        """Show in the form the values the opened results folder's steps were made with."""
        from ..core.pipeline import step_values

        self._form_shows = None
        recorded = self.session.recorded_parameters()
        if recorded is not None:
            exact = {s: step_values(s, recorded["params"].get(s)) for s in self.steps}
            self.set_form(exact)
            self._form_shows = (self.parameters(), exact)

    def form_values(self) -> dict[str, dict[str, Any]]:
        """The form's values (:meth:`parameters`); where a field still shows the value an opened results
        folder recorded, that value exactly, as a spin box may round or clamp it (a test fraction of 0.125
        shows as 0.13): continuing the folder must not change it."""
        params = self.parameters()
        if self._form_shows is not None:
            shown, exact = self._form_shows
            for step, values in params.items():
                for name, value in values.items():
                    if name in shown.get(step, {}) and shown[step][name] == value and name in exact.get(step, {}):
                        values[name] = exact[step][name]
        return params

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

        if self._joining:  # a dock added later: what the viewer shows stays
            return
        full = f"{self.session.subject} {name}"
        wanted = [e for e, (_, _, _, layer_name) in results_entries(self.session).items()
                  if layer_name in (name, full)]
        if wanted and not self._opening:
            load_results_layers(self.viewer, self.session, wanted)
        for candidate in (full, name):
            if candidate in self.viewer.layers:
                show_alone(self.viewer, self.viewer.layers[candidate])
                return
