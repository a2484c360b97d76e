"""A failure injected into the steps of every dock widget: exactly one napari error notification carrying
the core's message, the widget is ready again, and the viewer stays usable (another step then runs)."""

from __future__ import annotations

from napari.utils.notifications import NotificationSeverity, notification_manager

from .conftest import FAST, PLUGIN


def _errors() -> list[str]:
    return [str(n.message) for n in notification_manager.records if n.severity == NotificationSeverity.ERROR]


def _run_and_collect(qtbot, widget) -> list[str]:
    """Run the widget's steps to the end; the error notifications that appeared meanwhile."""
    before = len(_errors())
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600_000)
    return _errors()[before:]


def test_every_widget_reports_one_error_and_the_viewer_stays_usable(loaded, qtbot, tmp_path, monkeypatch):
    from napari_brain_concepts.core import pipeline

    viewer, _, session = loaded
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    # napari's notification of an error about a file starts with its folder and name, the full path last
    short = f"{tmp_path.name}/not-a-model"
    # (widget, how to make its first step fail, expected core message, the step that failed)
    cases = [
        ("Decode", lambda w: (w.embedding.addItem("no-such-embedding"), w.embedding.setCurrentText("no-such-embedding")),
         "no embedding 'no-such-embedding'", "decode"),
        ("Concepts", lambda w: w.n_components.setValue(1024),  # the form: more directions than the space has
         "parameter n_components: K = 1024 is larger than the embedding dimension 384", "concepts"),
        ("Alignment", lambda w: session.ensure_context({"embed": {**FAST["embed"], "model": str(not_a_model)}}),
         f"{short}: is not a Hugging Face model folder (no config.json)", "embed"),
        ("Captions", lambda w: session.ensure_context({"captions": {**FAST["captions"], "model": str(not_a_model)}}),
         f"{short}: is not a Hugging Face model folder (no config.json)", "captions"),
    ]
    widgets = {}
    for name, inject, expected, step in cases:
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        widgets[name] = widget
        inject(widget)
        errors = _run_and_collect(qtbot, widget)
        assert len(errors) == 1, (name, errors)
        assert expected in errors[0] and "Fix:" in errors[0], (name, errors[0])
        if expected.startswith(short):  # a folder: its parent and name first, the full path last
            assert errors[0].startswith(expected) and errors[0].endswith(f"(Full path: {not_a_model})"), errors[0]
        assert "\n" not in errors[0] and "Traceback" not in errors[0]
        assert not session.done(step)
        assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
        assert "error" in widget.status.text()
        if name == "Decode":      # the decode widget's form sets the embedding of every later decode run
            widget.embedding.setCurrentText("captions")
            widget.embedding.removeItem(widget.embedding.findText("no-such-embedding"))
            session.ensure_context({"decode": {**FAST["decode"], "embedding": "captions"}})

    # not only InputError: any exception raised inside a step is one notification naming its type
    captions = widgets["Captions"]
    session.ensure_context({"captions": dict(FAST["captions"])})
    original = pipeline.StepSpec.function

    def broken(ctx):
        yield from ()
        raise RuntimeError("injected failure in captions")

    monkeypatch.setattr(pipeline.StepSpec, "function",
                        lambda self: broken if self.name == "captions" else original(self))
    assert _run_and_collect(qtbot, captions) == ["RuntimeError: injected failure in captions"]
    assert not session.done("captions") and captions.run_button.isEnabled()
    monkeypatch.undo()

    # Predict map with the Phrase box empty names the box (it named the core's parameter 'text')
    before = len(_errors())
    widgets["Alignment"].phrase.setText("  ")
    widgets["Alignment"].predict()
    assert _errors()[before:] == ["Phrase: is empty. Fix: type a sentence or a few words in the Phrase box, then "
                                  "press Predict map."]

    # the viewer is still usable: with the bad input fixed, a step runs to the end without a new error
    decode = widgets["Decode"]
    decode.embedding.setCurrentText("captions")
    session.ensure_context({"decode": {**FAST["decode"], "embedding": "captions"}})
    assert _run_and_collect(qtbot, decode) == []
    assert session.done("decode"), decode.status.text()
    subject = session.study.subject(session.subject)
    assert f"{subject.name} decoder_weight_norm" in viewer.layers


def test_a_value_out_of_range_is_refused_before_any_step_runs(loaded, qtbot):
    """The session refuses a form's value out of range, and keeps the values it had; one set behind the forms'
    back (from the console) stops the run before its first step, as one notification naming it STEP.NAME."""
    import pytest

    from napari_brain_concepts.core.errors import InputError

    viewer, _, session = loaded
    with pytest.raises(InputError, match=r"^parameter masks\.sparsity: -1\.0 is outside \[0\.0, inf\)\. Fix"):
        session.ensure_context({"masks": {"sparsity": -1.0}})
    assert session.context.params["masks"] == FAST["masks"]
    session.context.params["decode"] = {**FAST["decode"], "cv": 1}
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Concepts")
    errors = _run_and_collect(qtbot, widget)
    assert len(errors) == 1 and errors[0].startswith("parameter decode.cv: 1 is outside [2, inf). Fix"), errors
    assert not any(session.done(s) for s in ("decode", "concepts", "masks", "shared"))
    assert widget.run_button.isEnabled() and "error" in widget.status.text()
