"""The command line as a user runs it: determinism, kill and resume, one-line errors on bad input."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_brain_concepts.cli import main, parse_params
from napari_brain_concepts.core.errors import InputError

FAST = ["--param", "decode.cv=3", "--param", "decode.alphas=[1.0, 100.0, 10000.0]", "--quiet"]


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "napari_brain_concepts.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _decoded(study_folder: Path, out: Path, capsys) -> tuple[dict[str, str], str]:
    """Run decode into ``out``; the hashes of its results and its manifest's text."""
    assert main(["decode", str(study_folder), "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    return _hashes(out), (out / "manifest.json").read_text()


def _hashes(root: Path) -> dict[str, str]:
    """Hashes of every result file but the manifest (it holds times) and PNG figures (their bytes can
    differ with the font cache of the machine; the data behind them are compared)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json" and p.suffix != ".png"}


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "study"
    result = _cli("demo", "--size", "tiny", "--write", str(folder), "--write-only")
    assert result.returncode == 0, result.stderr
    return folder


def test_two_runs_give_identical_files(study_folder, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        result = _cli("maps", str(study_folder), "--out", str(out), *FAST)
        assert result.returncode == 0, result.stderr
    first, second = (_hashes(o) for o in outs)
    assert any(name.endswith(".nii.gz") for name in first)
    assert first == second


def test_a_new_analysis_in_a_results_folder_says_it_replaces_the_earlier_one(study_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["decode", str(study_folder), "--out", str(out), *FAST]) == 0
    assert "earlier analysis" not in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    assert main(["maps", str(study_folder), "--out", str(out), *FAST, "--param", "decode.cv=4"]) == 0
    err = capsys.readouterr().err
    assert f"{out} holds the results of an earlier analysis (" in err and "replaced" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["steps"]) == ["decode", "maps"] and manifest["parameters"]["params"]["decode"]["cv"] == 4
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / ".earlier").exists()


def test_a_step_verb_does_not_wipe_finished_steps_it_would_not_run(study_folder, tmp_path, capsys):
    """The user review: `decode` without --resume into a folder holding a whole analysis replaced it (87 maps
    became 1). A step verb (or --steps) refuses instead, pointing at --resume; the folder stays as it was."""
    out = tmp_path / "run"
    assert main(["maps", str(study_folder), "--out", str(out), *FAST]) == 0
    before, manifest = _hashes(out), (out / "manifest.json").read_text()
    capsys.readouterr()
    for args, asked in [(["decode", str(study_folder)], "'decode'"),
                        (["run", str(study_folder), "--steps", "decode"], "'run --steps decode'")]:
        assert main([*args, "--out", str(out), *FAST]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {out}: holds an earlier analysis (") and "\n" not in err
        assert err.endswith(f"with finished steps that {asked} does not run: maps. Fix: add --resume to continue "
                            "that analysis (its finished steps are kept), give another --out folder, or delete "
                            "this one to start again.")
        assert _hashes(out) == before and (out / "manifest.json").read_text() == manifest
    assert main(["decode", str(study_folder), "--out", str(out), *FAST, "--resume"]) == 0  # nothing to do
    assert _hashes(out) == before


def test_a_new_analysis_that_fails_gives_the_earlier_results_back(study_folder, tmp_path, capsys):
    """A value that fails when its step starts (an embedding the study lacks): the folder's earlier results
    come back, untouched."""
    out = tmp_path / "run"
    before, manifest = _decoded(study_folder, out, capsys)
    assert main(["decode", str(study_folder), "--out", str(out), *FAST,
                 "--param", "decode.embedding=no-such-embedding"]) == 2
    err = capsys.readouterr().err
    assert "no-such-embedding" in err and "the earlier results are back as they were" in err
    assert _hashes(out) == before and (out / "manifest.json").read_text() == manifest
    assert not (out / ".earlier").exists()
    # into a new folder: no half-made results folder is left
    fresh = tmp_path / "fresh"
    assert main(["decode", str(study_folder), "--out", str(fresh), *FAST,
                 "--param", "decode.embedding=no-such-embedding"]) == 2
    assert not fresh.exists()


def test_ctrl_c_gives_the_earlier_results_back_and_says_what_became_of_the_folder(study_folder, tmp_path, capsys,
                                                                                    monkeypatch):
    """The NSD review: Ctrl-C (KeyboardInterrupt, which is no Exception) left the earlier analysis hidden in
    .earlier/, where the next run deleted it, and a Ctrl-C in the first step left a folder holding only its
    manifest; the message said "finished steps are kept" whatever had happened."""
    from napari_brain_concepts.core.concepts import category_maps

    def interrupted(ctx):
        yield from ()
        raise KeyboardInterrupt

    out = tmp_path / "run"
    before, manifest = _decoded(study_folder, out, capsys)
    monkeypatch.setattr(category_maps, "maps_step", interrupted)
    assert main(["maps", str(study_folder), "--out", str(out), *FAST, "--param", "decode.cv=4"]) == 130
    err = capsys.readouterr().err
    assert "the earlier results are back as they were" in err and err.strip().endswith("stopped")
    assert _hashes(out) == before and (out / "manifest.json").read_text() == manifest
    assert not (out / ".earlier").exists()
    # resumed: decode stays finished, and the message says so
    assert main(["maps", str(study_folder), "--out", str(out), *FAST, "--resume"]) == 130
    assert "the finished steps are kept (decode); add --resume" in capsys.readouterr().err
    # a new folder: the step before maps finished, so it is kept; stopped in the first step, nothing is left
    fresh = tmp_path / "fresh"
    assert main(["maps", str(study_folder), "--out", str(fresh), *FAST]) == 130
    assert "the finished steps are kept (decode)" in capsys.readouterr().err
    # an error in a step after decode: what finished is said too (the NSD review)
    def failing(ctx):
        yield from ()
        raise InputError("step maps", "cannot run here", "mend it")

    monkeypatch.setattr(category_maps, "maps_step", failing)
    broken = tmp_path / "broken"
    assert main(["maps", str(study_folder), "--out", str(broken), *FAST]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2] == (f"{broken}: the finished steps are kept (decode); once the error below is mended, "
                         "--resume continues this analysis")
    assert lines[-1] == "error: step maps: cannot run here. Fix: mend it."
    empty = tmp_path / "empty"
    monkeypatch.setattr("napari_brain_concepts.core.decoding.steps.decode_step", interrupted)
    assert main(["decode", str(study_folder), "--out", str(empty), *FAST]) == 130
    assert "no step had finished; nothing was written" in capsys.readouterr().err and not empty.exists()
    assert main(["decode", str(study_folder), "--out", str(empty), *FAST, "--resume"]) == 130  # resumed too
    assert "no step had finished; nothing was written" in capsys.readouterr().err and not empty.exists()
    # stopped while the summary prints: the analysis had finished, and the message says so
    monkeypatch.undo()

    def stop(ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_brain_concepts.cli._summary", stop)
    assert main(["decode", str(study_folder), "--out", str(empty), *FAST]) == 130
    assert f"stopped; the analysis had finished: its results are in {empty}" in capsys.readouterr().err
    assert json.loads((empty / "manifest.json").read_text())["steps"]["decode"]


def test_resume_adds_a_step_and_refuses_other_values_for_finished_ones(study_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["decode", str(study_folder), "--out", str(out), *FAST]) == 0
    decoded = (out / "tables" / "decoding.tsv").read_bytes()
    assert main(["maps", str(study_folder), "--out", str(out), *FAST, "--resume"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["steps"]) == ["decode", "maps"] and manifest["parameters"]["steps"] == ["decode", "maps"]
    assert (out / "tables" / "decoding.tsv").read_bytes() == decoded
    capsys.readouterr()
    other = ["--param", "decode.cv=4", *FAST[2:]]
    assert main(["maps", str(study_folder), "--out", str(out), *other, "--resume"]) == 2
    assert "was written with other parameters for its finished steps: decode.cv=3 (now 4)" in capsys.readouterr().err


def test_a_step_verb_names_its_study_once(study_folder, tmp_path, capsys):
    """No study is a mistake, not the synthetic study; two studies are one too many."""
    for args, expected in [
        (["decode", "--out", str(tmp_path / "a")], "decode needs a STUDY folder or --nsd ROOT --subject N, "
                                                   "or --size tiny|small|default for the synthetic study"),
        (["decode", str(study_folder), "--size", "small", "--out", str(tmp_path / "a")],
         "give one study: a STUDY folder and --size (the synthetic study) were both given"),
        (["run", str(study_folder), "--nsd", str(tmp_path), "--subject", "1", "--out", str(tmp_path / "a")],
         "give one study: a STUDY folder and --nsd ROOT were both given"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(["demo", "--write-only", "--out", str(tmp_path / "b")]) == 2
    assert "--write-only: needs --write STUDY" in capsys.readouterr().err


def test_kill_then_resume_keeps_finished_steps(study_folder, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    args = [sys.executable, "-m", "napari_brain_concepts.cli", "maps", str(study_folder), "--out", str(out), *FAST]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    manifest = out / "manifest.json"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and "decode" in json.loads(manifest.read_text()).get("steps", {}):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = json.loads(manifest.read_text())["steps"]
    assert list(steps) == ["decode"]
    decoded = out / "tables" / "decoding.tsv"
    before = decoded.stat().st_mtime_ns, decoded.read_bytes()
    assert not (out / "tables" / "concept_maps.tsv").exists()

    result = _cli("maps", str(study_folder), "--out", str(out), *FAST, "--resume")
    assert result.returncode == 0, result.stderr
    assert list(json.loads(manifest.read_text())["steps"]) == ["decode", "maps"]
    assert (decoded.stat().st_mtime_ns, decoded.read_bytes()) == before
    assert (out / "tables" / "concept_maps.tsv").is_file()
    assert not (out / ".staging").exists()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: root, "study.json"),
        (lambda root: (root / "study.json").write_text("{not json") and root, "study.json"),
    ],
    ids=["empty-folder", "bad-json"],
)
def test_bad_study_is_one_line_and_exit_2(tmp_path, capsys, make, expected):
    bad = tmp_path / "bad"
    bad.mkdir()
    folder = make(bad)
    code = main(["run", str(folder), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    assert expected in err and "Fix:" in err


def test_cli_subprocess_reports_parameter_error(study_folder, tmp_path):
    result = _cli("run", str(study_folder), "--out", str(tmp_path / "o"), "--steps", "shared",
                  "--param", "shared.eps=3", *FAST)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "eps" in lines[0] and "Fix:" in lines[0]


@pytest.mark.parametrize(("param", "expected"), [
    ("masks.n_step=10", "unknown names ['n_step']"),
    ("mask.n_steps=10", "no step has that name"),
    # values of the wrong type (these ended in tracebacks, or were read one character at a time)
    ("decode.alphas=1,10", "parameter decode.alphas: '1,10' is not a list of numbers"),
    ("decode.cv=three", "parameter decode.cv: 'three' is not a whole number"),
    ("decode.subjects=sub-01", "parameter decode.subjects: 'sub-01' is not a list of texts or null"),
    ("masks.sparsity=abc", "parameter masks.sparsity: 'abc' is not a number"),
])
def test_unknown_parameter_fails_before_the_study_is_read(tmp_path, capsys, param, expected):
    missing = tmp_path / "no-such-study"  # reading it would fail with a different error
    code = main(["run", str(missing), "--out", str(tmp_path / "out"), "--param", param, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert expected in err and "Fix:" in err and "no-such-study" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("verb", "param", "expected"), [
    ("masks", "masks.sparsity=-1", "parameter masks.sparsity: -1 is outside [0.0, inf). "
                                   "Fix: choose masks.sparsity in [0.0, inf)."),
    ("decode", "decode.cv=1", "parameter decode.cv: 1 is outside [2, inf). Fix: choose decode.cv in [2, inf)."),
    ("run", "decode.alphas=[1.0, -10.0]", "parameter decode.alphas: -10.0 is outside (0, inf)."),
    ("run", "shared.eps=3", "parameter shared.eps: 3 is outside (0.0, 2.0]."),
    ("run", "rsa.radius=0", "parameter rsa.radius: 0 is outside (0, inf)."),
    # a choice, as the ranges: it used to fail when its step started (rsa after decode and embed)
    ("run", "rsa.stimuli=subjects", "parameter rsa.stimuli: 'subjects' is unknown. "
                                    "Fix: use one of 'shared', 'test', 'subject'."),
    ("concepts", "concepts.pairs=heldout", "parameter concepts.pairs: 'heldout' is unknown."),
    ("run", 'embed.controls=["words_all", "nouns"]', "parameter embed.controls: 'nouns' is unknown."),
])
def test_a_value_out_of_range_fails_before_any_step_runs(study_folder, tmp_path, capsys, verb, param, expected):
    """A value out of its range is refused as the values are read, named as the user typed it: it used to fail
    only when its step started, after the steps before it had run (minutes on a large study)."""
    out = tmp_path / "out"
    args = [str(study_folder), "--out", str(out), *FAST, "--param", param]
    code = main([verb, *args] if verb != "run" else ["run", *args, "--steps", "masks", "shared", "rsa"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert expected in err and "Fix:" in err
    assert not out.exists()  # no decode results: no results folder at all


def test_the_demo_refuses_a_value_out_of_range_before_it_runs(tmp_path, capsys):
    out = tmp_path / "R"
    assert main(["demo", "--size", "tiny", "--out", str(out), "--param", "masks.sparsity=-1"]) == 2
    captured = capsys.readouterr()
    # one line and no step's progress (it used to decode and fit the concept basis first, for minutes)
    assert captured.err.startswith("error: parameter masks.sparsity: -1 is outside [0.0, inf)")
    assert captured.err.count("\n") == 1 and "decode" not in captured.out + captured.err
    assert not out.exists()


def test_resume_refuses_a_value_out_of_range_then_goes_on_with_a_corrected_one(study_folder, tmp_path, capsys):
    out = tmp_path / "run"
    before, manifest = _decoded(study_folder, out, capsys)
    for extra in (["--resume"], []):  # continued, or a new analysis that would replace the decode results
        assert main(["concepts", str(study_folder), "--out", str(out), *FAST, "--param", "concepts.n_iter=-5",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert "parameter concepts.n_iter: -5 is outside [0, inf)" in err and "replaced" not in err
        assert _hashes(out) == before and (out / "manifest.json").read_text() == manifest
    assert main(["concepts", str(study_folder), "--out", str(out), *FAST, "--param", "concepts.n_iter=20",
                 "--param", "concepts.contact_sheets=false", "--resume"]) == 0
    assert list(json.loads((out / "manifest.json").read_text())["steps"]) == ["decode", "concepts"]
    assert {k: v for k, v in _hashes(out).items() if k in before} == before  # the decode results, as they were


def test_run_analysis_checks_the_ranges_of_every_step_before_the_first(tmp_path):
    """The Python API and the widgets run steps through run_analysis: it checks them all first; a step checks
    its own when it starts (called on its own), naming the parameter ``step.name`` too."""
    from napari_brain_concepts.core.concepts.steps import MasksParams
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.pipeline import run_analysis
    from napari_brain_concepts.core.progress import run_to_end
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(size="tiny")
    store = ResultsStore.create(tmp_path / "r", study=study.name, fingerprint=study.fingerprint())
    ctx = AnalysisContext(study=study, store=store, device="cpu",
                          params={"decode": {"cv": 3}, "masks": MasksParams(threshold=0.0)})
    with pytest.raises(InputError, match=r"^parameter masks\.threshold: 0\.0 is outside \(0\.0, 1\.0\]\. Fix"):
        run_to_end(run_analysis(ctx, ["masks"]))
    assert not store.is_done("decode") and not ctx.state.get("decoders")
    with pytest.raises(InputError, match=r"^parameter masks\.threshold: "):
        ctx.step_params("masks", MasksParams)
    # a step's choices too, named as the user gives them (a step run on its own checks them itself)
    from napari_brain_concepts.core.alignment.steps import RsaParams

    ctx.params["rsa"] = {"stimuli": "subjects"}
    with pytest.raises(InputError, match=r"^parameter rsa\.stimuli: 'subjects' is unknown\. Fix: use one of "):
        ctx.step_params("rsa", RsaParams)


def test_every_steps_ranges_name_its_parameters_and_hold_its_defaults():
    import dataclasses

    from napari_brain_concepts.core.pipeline import STEPS, check_params
    from napari_brain_concepts.core.ranges import MASKS

    for spec in STEPS.values():
        cls = spec.params_class()
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(getattr(cls, "RANGES", {})) <= fields and set(getattr(cls, "CHOICES", {})) <= fields, spec.name
        check_params({spec.name: cls()})  # the defaults are in range and among the choices
    assert STEPS["masks"].params_class().RANGES["sparsity"] is MASKS["sparsity"]  # the estimator's, not a copy


def test_a_paper_preset_sets_its_parameters_and_param_overrides_them(study_folder, tmp_path, capsys):
    """--preset sdc-iclr2025: Efird et al.'s decoders (contrastive, single trials, noise ceiling >= 8 %, 50
    reruns without early stopping) and shared-concept settings; shortened here with --param."""
    from napari_brain_concepts.cli import PRESETS

    out = tmp_path / "paper"
    assert main(["decode", str(study_folder), "--out", str(out), "--preset", "sdc-iclr2025", "--quiet",
                 "--param", "decode.n_reruns=1", "--param", "decode.max_iter=30"]) == 0
    recorded = json.loads((out / "manifest.json").read_text())["parameters"]
    assert recorded["preset"] == "sdc-iclr2025"
    assert recorded["params"]["decode"] == {**PRESETS["sdc-iclr2025"]["decode"], "n_reruns": 1, "max_iter": 30}
    assert recorded["params"]["shared"] == {"columns": "weights", "eps": 0.6, "centre": False}
    assert recorded["params"]["decode"]["patience"] is None
    table = (out / "tables" / "decoding.tsv").read_text()
    assert "\tcontrastive\tsdc\t" in table
    capsys.readouterr()
    # resumed without the preset: refused, and the fix names it
    assert main(["maps", str(study_folder), "--out", str(out), "--resume", "--quiet", "--param",
                 "decode.n_reruns=1", "--param", "decode.max_iter=30"]) == 2
    assert "Fix: resume with the same parameters (--preset sdc-iclr2025, as they were made)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["decode", str(study_folder), "--out", str(out), "--preset", "sdc-2099"])
    assert "invalid choice: 'sdc-2099'" in capsys.readouterr().err


def test_parse_params():
    assert parse_params(["decode.cv=3", "masks.batched=false", "decode.alphas=[1, 10]", "embed.model=/m"]) == {
        "decode": {"cv": 3, "alphas": [1, 10]}, "masks": {"batched": False}, "embed": {"model": "/m"}}
    with pytest.raises(InputError, match="STEP.NAME=VALUE"):
        parse_params(["cv=3"])


def test_every_step_names_its_parameter_class():
    import dataclasses

    from napari_brain_concepts.core.pipeline import STEPS, check_params

    for spec in STEPS.values():
        assert dataclasses.is_dataclass(spec.params_class()), spec.name
    check_params({"decode": {"cv": 3}, "masks": {"n_steps": 10}, "rsa": {"radius": 3}})


def test_run_nsd_one_subject_runs_every_step_that_applies(tmp_path):
    """`brain-concepts run --nsd ROOT --subject 1` on the miniature NSD: every step of a whole analysis
    runs, but `shared`, which needs several participants, is left out with its reason printed."""
    from .nsd_fixture import make_nsd_tree

    make_nsd_tree(tmp_path / "nsd", subjects=(1,))
    out = tmp_path / "out"
    fast = ["--param", "concepts.n_iter=200", "--param", "masks.n_steps=60", "--param", "masks.burn_in=20",
            "--param", "image-models.epochs=2", "--param", "rsa.radius=2"]
    result = _cli("run", "--nsd", str(tmp_path / "nsd"), "--subject", "1", "--out", str(out), *FAST, *fast)
    assert result.returncode == 0, result.stderr
    steps = json.loads((out / "manifest.json").read_text())["steps"]
    assert list(steps) == ["decode", "maps", "concepts", "masks", "embed", "rsa", "encode", "captions",
                           "image-models"]
    assert "Left out step shared: it needs at least 4 participants" in result.stdout
    assert (out / "subjects" / "subj01" / "masks").is_dir()
    assert not (out / ".staging").exists()


def test_threads_limits_torch_and_blas(tmp_path):
    code = ("import torch, threadpoolctl; from napari_brain_concepts.cli import main; "
            f"rc = main(['decode', {str(tmp_path / 'missing')!r}, '--out', {str(tmp_path / 'out')!r}, '--threads', '1']); "
            "print(rc, torch.get_num_threads(), {p['num_threads'] for p in threadpoolctl.threadpool_info()})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")})
    assert result.stdout.split() == ["2", "1", "{1}"], result.stdout + result.stderr


def test_a_warning_is_one_line_naming_what_it_is_about(study_folder, tmp_path, capsys):
    """Warnings print as the errors do: ``warning: …`` on one line, not Python's source path and code line."""
    import shutil

    import numpy as np

    study = tmp_path / "study"
    shutil.copytree(study_folder, study)
    path = study / "subjects" / "sub-02" / "responses.npy"
    responses = np.load(path)
    responses[:, :30] = 1.0  # 30 constant voxels: dropped, with a warning
    np.save(path, responses)
    assert main(["decode", str(study), "--out", str(tmp_path / "out"), *FAST]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "constant" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: subject sub-02: 30 of "), err
    assert "UserWarning" not in err and ".py:" not in err


@pytest.mark.parametrize(("decoder", "later"),
                         [({"decoder": "ridge"}, ["masks", "shared"]),
                          ({"decoder": "contrastive", "n_reruns": 2, "max_iter": 60, "patience": None}, ["masks"])],
                         ids=["ridge", "contrastive"])
def test_resume_reads_the_finished_decoders_back_instead_of_fitting_them_again(tmp_path, decoder, later):
    """The NSD review: `masks --resume` after `decode` fitted every decoder again in memory (with the paper's 50
    contrastive reruns, hours per NSD subject). The saved weights give the same masks (and, for ridge, whose CV
    scores the shared step reads, the same shared concepts) as one run."""
    import pandas as pd

    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.pipeline import run_analysis
    from napari_brain_concepts.core.progress import run_to_end
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(size="tiny")
    params = {"decode": {"cv": 3, "alphas": [1.0, 100.0, 10000.0], **decoder},
              "concepts": {"n_components": 6, "n_iter": 100, "contact_sheets": False},
              "masks": {"n_steps": 40, "burn_in": 10}}

    contexts = {}

    def run(folder, steps, resume=False):
        store = ResultsStore.create(tmp_path / folder, resume=resume, fingerprint=study.fingerprint())
        ctx = contexts[folder] = AnalysisContext(study=study, store=store, device="cpu",
                                                 params={k: dict(v) for k, v in params.items()})
        said = []
        run_to_end(run_analysis(ctx, steps, resume=resume), lambda p: said.append(p.message))
        return said

    params["shared"] = {"contact_sheets": False, "eps_sweep": [0.6]}
    run("one", later)
    fitting = run("two", ["decode"])
    assert any("rerun 1/2" in m or "alpha" in m.lower() or "fold" in m.lower() for m in fitting), fitting
    said = run("two", later, resume=True)
    assert "step decode (in memory)" in said
    assert "sub-01: decoder read back from arrays/decoder_sub-01.npz (fitted before)" in said
    assert not any(m in fitting for m in said if m.startswith("sub-01: ") and "preparing" not in m), said
    for table in ("mask_scores", "shared_concepts", "shared_overlap")[:1 + 2 * ("shared" in later)]:
        one, two = (pd.read_csv(tmp_path / f / "tables" / f"{table}.tsv", sep="\t") for f in ("one", "two"))
        pd.testing.assert_frame_equal(one, two, rtol=1e-4)
    if "shared" in later:  # it chooses its alpha from the ridge decoders' CV scores, which are read back too
        assert contexts["one"].state["shared"]["ridge_alphas"] == contexts["two"].state["shared"]["ridge_alphas"]

    # decoders of another embedding are not read back as if they were this one's
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    manifest["steps"]["decode"]["embedding_model"] = "another-model"
    (tmp_path / "two" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"decoder_sub-01\.npz: holds a decoder of the embedding of "
                                         r"'another-model', and this analysis decodes 'all-MiniLM-L6-v2'"):
        run("two", ["maps"], resume=True)


def test_a_decode_stopped_after_some_participants_continues_from_their_decoders(study_folder, tmp_path, capsys,
                                                                               monkeypatch):
    """Decode is one step for all participants: a decode stopped (or failed) during a later participant fitted
    every participant again on --resume (hours each for NSD's subjects). The decoders fitted before the stop
    are kept and read back, when the decode values, seed and embedding are unchanged; the results equal one
    run's, and nothing of the kept decoders stays once decode finishes."""
    from napari_brain_concepts.core.decoding import steps

    real, fits, stop_at = steps.fit_decoder_iter, [], [None]

    def fit(decoder, data):
        fits.append(len(fits) + 1)
        if len(fits) == stop_at[0]:
            raise KeyboardInterrupt
        return (yield from real(decoder, data))

    monkeypatch.setattr(steps, "fit_decoder_iter", fit)
    one = tmp_path / "one"
    before, _ = _decoded(study_folder, one, capsys)
    n_subjects = len(fits)
    assert n_subjects >= 2
    two = tmp_path / "two"
    fits.clear()
    stop_at[0] = 2
    assert main(["decode", str(study_folder), "--out", str(two), *FAST]) == 130
    assert (f"{two}: the decoder of sub-01 that decode had fitted is kept; add --resume to continue this "
            "analysis") in capsys.readouterr().err
    assert (two / ".checkpoints" / "decode" / "sub-01.npz").is_file()
    fits.clear()
    stop_at[0] = None
    assert main(["decode", str(study_folder), "--out", str(two), *FAST, "--resume"]) == 0
    assert len(fits) == n_subjects - 1  # sub-01 was read back
    assert _hashes(two) == before and not (two / ".checkpoints").exists()
    # run again without --resume: it says what --resume would continue from, and, stopped, what went with it
    three = tmp_path / "three"
    fits.clear()
    stop_at[0] = 2
    assert main(["decode", str(study_folder), "--out", str(three), *FAST]) == 130
    capsys.readouterr()
    fits.clear()
    assert main(["decode", str(study_folder), "--out", str(three), *FAST]) == 130
    err = capsys.readouterr().err
    assert "that finished no step, with the decoder of sub-01 fitted: it is replaced (--resume continues" in err
    assert ("the earlier results are back as they were; the decoders this run had fitted (sub-01) went with it"
            in err)
    # other decode values: the kept decoder is not theirs; it is dropped, and each participant is fitted anew
    fits.clear()
    assert main(["decode", str(study_folder), "--out", str(three), *FAST, "--param", "decode.cv=4", "--resume"]) == 130
    assert "the decoder of sub-01 that decode had fitted is kept" in capsys.readouterr().err
    with np.load(three / ".checkpoints" / "decode" / "sub-01.npz") as kept:
        assert json.loads(str(kept["checkpoint_key"]))["decode"]["cv"] == 4
    # a damaged checkpoint (a half-copied folder) is fitted again, not an error
    (three / ".checkpoints" / "decode" / "sub-01.npz").write_bytes(b"PK\x03\x04 not a whole file")
    fits.clear()
    stop_at[0] = None
    assert main(["decode", str(study_folder), "--out", str(three), *FAST, "--param", "decode.cv=4", "--resume"]) == 0
    assert len(fits) == n_subjects and not (three / ".checkpoints").exists()
