"""``brain-concepts``: the command line (demo, run, view, and one verb per analysis step)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .core.errors import BrainConceptsError, InputError


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["decode.decoder=contrastive", "masks.n_steps=300"]`` → ``{"decode": {...}, "masks": {...}}``."""
    params: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        step, dot, name = key.partition(".")
        if not sep or not dot or not step or not name:
            raise InputError(f"--param {item}", "is not of the form STEP.NAME=VALUE",
                             "write e.g. --param decode.decoder=contrastive")
        params.setdefault(step, {})[name] = _parse_value(value)
    return params


def load_study(study: str | None, nsd: str | None = None, subject: list[int] | None = None,
               sessions: list[int] | None = None, size: str = "default", seed: int = 0, *,
               betas: str | None = None, to_common: str | None = None, embed_model: str | None = None,
               progress=None):
    """A study folder, an NSD root (``nsd``), or the synthetic study when ``study`` is ``None``.

    For NSD: ``betas`` is the betas version folder, ``to_common`` ``"identity"`` or a folder of
    ``subjXX.txt`` affines (native mm → common mm, for the shared concepts), ``embed_model`` the sentence
    model of the caption embedding computed as the study is read (``embed.model``; default the packaged
    one), and ``progress`` receives the reader's reports (one per session read)."""
    if nsd is not None:
        from .core.io.nsd import DEFAULT_BETAS, read_nsd, to_common_folder

        if not subject:
            raise InputError("--subject", "is required with --nsd", "add e.g. --subject 1")
        return read_nsd(nsd, subjects=subject, sessions=sessions, embed_captions=embed_model or True,
                        betas=betas or DEFAULT_BETAS, to_common=to_common_folder(to_common, subject),
                        progress=progress)
    if study is None:
        from .core.synthetic import make_synthetic_study

        return make_synthetic_study(seed=seed, size=size)
    from .core.io.study_folder import read_study

    return read_study(study)


class _Printer:
    """Progress to stderr: one line per step message, percentage at most twice a second."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._last = 0.0
        self._step = None

    def __call__(self, p) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        # every message of the analysis itself (a step starts, one is left out) has its line
        if p.step != self._step or p.step == "analysis" or p.done >= p.total or now - self._last > 0.5:
            self._step = p.step
            self._last = now
            pct = f"{100 * p.fraction:5.1f}%" if p.total else "      "
            print(f"[{p.step:>12}] {pct} {p.message}", file=sys.stderr, flush=True)


#: parameters the demo uses on the synthetic study, where the paper's (set for NSD) do not fit:
#: - rsa: on its coarse grid a 6-voxel searchlight would cover most of the mask;
#: - masks: with λ = 5 its masks keep 100–250 voxels per concept, the planted region plus voxels whose
#:   structured noise helps cancel the region's; λ = 20 keeps the region;
#: - concepts: its validation split gives 200 decoded pairs (NSD's, ~7,000) for a K × 384 basis; held-out
#:   pairs (2,000), K = 256 unpruned and batches of 500 give a basis that beats PCA (top-1 0.64 vs 0.49) and
#:   masks closer to the planted regions (mean Dice per subject 0.75–0.77; 0.64–0.70 with K = 64); the
#:   skewness reward (skew_weight 0.5, beyond the paper) turns components towards single concepts: 0.83–0.86;
#: - concepts and shared: half its scenes have a table and half a vivid colour, so by frequency "table" and
#:   "bright" label most concepts; ranked by excess over chance, the number concept reads "five, group, four"
#:   (by frequency: "table, top, five").
DEMO_PARAMS: dict[str, dict[str, Any]] = {
    "rsa": {"radius": 3},
    "masks": {"sparsity": 20.0},
    "concepts": {"pairs": "held-out", "n_components": 256, "prune": False, "batch_size": 500,
                 "skew_weight": 0.5, "word_ranking": "excess"},
    "shared": {"word_ranking": "excess"},
}


#: Named parameter sets that replicate a paper's own settings (``--preset NAME``; ``--param`` overrides them).
#: ``sdc-iclr2025``: Efird et al.'s ICLR 2025 code (fyshelab/contrastive-decoding-iclr2025) — a linear
#: contrastive decoder on single trials (the SDC protocol) of the voxels whose noise ceiling (from the repeats
#: of the non-test trials) is at least 8 %,
#: 50 reruns averaged, each trained for all 5,000 iterations with its last weights kept (no early stopping);
#: shared concepts clustered from the decoders' own columns at eps 0.6, without centring. This project's
#: defaults differ where its synthetic study showed the paper's settings fail on a small study (see
#: ``SharedParams``); the 50 reruns are 250,000 training iterations per participant.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "sdc-iclr2025": {
        "decode": {"decoder": "contrastive", "architecture": "linear", "protocol": "sdc", "nc_threshold": 8.0,
                   "ncsnr_from": "train", "n_reruns": 50, "max_iter": 5000, "patience": None},
        "shared": {"columns": "weights", "eps": 0.6, "centre": False},
    },
}


def _run(study, out: str, steps: list[str] | None, args: argparse.Namespace, defaults: dict | None = None,
         **manifest: Any) -> Any:
    from .core.context import AnalysisContext
    from .core.io.results import ResultsStore
    from .core.pipeline import run_analysis, with_requirements
    from .core.progress import run_to_end

    params = parse_params(getattr(args, "param", None))
    layers = [defaults or {}]
    if getattr(args, "preset", None):  # a paper's settings over the demo's; --param over both
        layers.append(PRESETS[args.preset])
    base: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for step, values in layer.items():
            base[step] = {**base.get(step, {}), **values}
    for step, values in base.items():
        params[step] = {**values, **params.get(step, {})}
    whole = steps is None  # a whole analysis leaves out the steps that cannot apply to the study
    if getattr(args, "model", None):
        clip = params.setdefault("clip", {})
        clip.update({k: getattr(args, k) for k in ("model", "checkpoint", "config") if getattr(args, k)})
        if steps is None:
            from .core.pipeline import DEFAULT_STEPS

            steps = list(DEFAULT_STEPS)
        steps = ["clip", *[s for s in steps if s not in ("clip", "embed")]] if args.command == "embed" \
            else ["clip", *steps]
    resume = getattr(args, "resume", False)
    # the store comes once the earlier results of the folder are dealt with (the steps to run depend on the
    # study, e.g. embed before decode on a study without its own caption embedding)
    ctx = AnalysisContext(study=study, store=None, params=params, random_state=args.seed, device=args.device,
                          scheduler=getattr(args, "client", None))
    if not resume and (Path(out) / "manifest.json").is_file():
        _replace_earlier(out, steps, ctx, args.command)
    # the earlier analysis is set aside, not deleted, until this one finishes: a run that fails (a mistyped
    # value, a missing file) gives the folder back as it was
    recorded = {"params": params, "seed": args.seed, "steps": steps}
    if getattr(args, "preset", None):
        recorded["preset"] = args.preset
    store = ResultsStore.create(out, parameters=recorded,
                                study=study.name, resume=resume, overwrite=True, keep_earlier=True,
                                fingerprint=study.fingerprint())
    ctx.store = store
    t0 = time.monotonic()
    analysis = None
    try:
        store.update(**manifest)
        order = with_requirements(steps) if steps else None
        analysis = run_analysis(ctx, order, resume=resume, leave_out=whole)
        run_to_end(analysis, _Printer(args.quiet))
    except BaseException as exc:  # an error, or Ctrl-C (KeyboardInterrupt), which is no Exception
        stopped = isinstance(exc, KeyboardInterrupt)
        if analysis is not None:  # a Ctrl-C while a report printed leaves the step open: its staging goes now
            analysis.close()
        fitted = store.checkpoints("decode")  # this run's (an earlier analysis's are set aside with it)
        if not resume and store.restore_earlier():  # a resumed analysis set nothing aside
            dropped = (f"; the decoders this run had fitted ({', '.join(fitted)}) went with it (--resume continues "
                       "an analysis instead of replacing it)") if fitted else ""
            print(f"{out}: the earlier results are back as they were{dropped}", file=sys.stderr)
        elif store.discard_if_empty():  # no half-made results folder (a manifest, empty folders)
            if stopped:
                print(f"{out}: no step had finished; nothing was written", file=sys.stderr)
        else:  # a step after others failed or was stopped, or decode after some participants: what finished stays
            kept = [f"the finished steps are kept ({', '.join(store.finished_steps)})"] if store.finished_steps else []
            if fitted:  # only those made with the values of this run: decode drops the others as it starts
                kept.append(f"the decoder{'s' if len(fitted) > 1 else ''} of {', '.join(fitted)} that decode had "
                            f"fitted {'are' if len(fitted) > 1 else 'is'} kept")
            then = "add --resume to continue" if stopped else "once the error below is mended, --resume continues"
            print(f"{out}: {'; '.join(kept)}; {then} this analysis", file=sys.stderr)
        if stopped:
            exc.reported = True  # what became of the folder is said: main() only says it stopped
        raise
    args.finished = True  # a Ctrl-C from here on stops the summary, not the analysis
    store.drop_earlier()
    ctx.state["elapsed_s"] = time.monotonic() - t0
    return ctx


def _replace_earlier(out: str, steps: list[str] | None, ctx: Any, command: str) -> None:
    """A new analysis into a folder holding results: a whole analysis replaces them (and says so); one of
    some steps only (a step verb, ``--steps``) refuses when the folder holds finished steps it would not run
    again, rather than delete them."""
    from .core.io.results import ResultsStore
    from .core.pipeline import with_requirements

    earlier = ResultsStore(out).manifest
    if steps:
        will_run = set(with_requirements(steps, ctx))
        kept = [s for s in earlier.get("steps") or {} if s not in will_run]
        if kept:
            asked = f"{command} --steps {' '.join(steps)}" if command in ("run", "demo") else command
            raise InputError(out, f"holds an earlier analysis ({earlier.get('study')}, created "
                             f"{earlier.get('created')}) with finished steps that {asked!r} does not run: "
                             f"{', '.join(kept)}",
                             "add --resume to continue that analysis (its finished steps are kept), give another "
                             "--out folder, or delete this one to start again")
    fitted = ResultsStore(out).checkpoints("decode")
    if not earlier.get("steps") and fitted:  # a decode stopped after some participants, run again
        print(f"{out} holds an earlier analysis ({earlier.get('study')}, created {earlier.get('created')}) that "
              f"finished no step, with the decoder{'s' if len(fitted) > 1 else ''} of {', '.join(fitted)} fitted: "
              "it is replaced (--resume "
              "continues it from them instead)", file=sys.stderr)
        return
    print(f"{out} holds the results of an earlier analysis ({earlier.get('study')}, created "
          f"{earlier.get('created')}): they are replaced (--resume continues it instead)", file=sys.stderr)


def _summary(ctx) -> str:
    from .core.summary import format_summary

    return format_summary(ctx)


def cmd_demo(args: argparse.Namespace) -> int:
    from .core.synthetic import make_synthetic_study

    if args.write_only and not args.write:
        raise InputError("--write-only", "needs --write STUDY (the folder to write the study to)",
                         "add --write FOLDER, or leave --write-only out to run the analysis")
    t0 = time.monotonic()
    study = make_synthetic_study(seed=args.seed, size=args.size)
    if args.write:
        from .core.io.study_folder import write_study

        write_study(study, args.write)
        print(f"wrote the synthetic study to {args.write}")
    if args.write_only:
        return 0
    ctx = _run(study, args.out, args.steps, args, defaults=DEMO_PARAMS, synthetic_size=args.size,
               synthetic_seed=args.seed)
    print(_summary(ctx))
    print(f"\nresults in {Path(args.out).resolve()}  ({time.monotonic() - t0:.0f} s in all)")
    print(f"open them in napari:  brain-concepts view {args.out}")
    return 0


def _origin(args: argparse.Namespace, study=None) -> dict[str, Any]:
    """How to find the study again (for ``brain-concepts view RESULTS``); for NSD also the sessions read."""
    if getattr(args, "nsd", None):
        from .core.io.nsd import nsd_origin

        return nsd_origin(args.nsd, args.subject, args.sessions, args.betas, args.to_common, study)
    if getattr(args, "study", None):
        return {"study_path": str(Path(args.study).resolve())}
    return {"synthetic_size": getattr(args, "size", "default"), "synthetic_seed": args.seed}


def _load(args: argparse.Namespace, **synthetic: Any):
    """The study the arguments name (with the NSD options, and the caption embedding's model for NSD), once
    the results folder is known to be one (reading NSD takes minutes to hours)."""
    from .core.io.results import check_results_folder

    check_results_folder(args.out)
    model = (parse_params(getattr(args, "param", None)).get("embed") or {}).get("model")
    return load_study(args.study, args.nsd, args.subject, args.sessions, **synthetic, betas=args.betas,
                      to_common=args.to_common, embed_model=model, progress=_Printer(args.quiet))


def cmd_run(args: argparse.Namespace) -> int:
    study = _load(args)
    ctx = _run(study, args.out, args.steps, args, **_origin(args, study))
    print(_summary(ctx))
    print(f"\nresults in {Path(args.out).resolve()}")
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    study = _load(args, size=args.size, seed=args.seed)
    ctx = _run(study, args.out, [args.command], args, **_origin(args, study))
    print(_summary(ctx))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from ._napari.launch import launch_viewer

    launch_viewer(args.path, screenshot=args.screenshot, block=not args.screenshot)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .core.pipeline import STEPS

    parser = argparse.ArgumentParser(prog="brain-concepts", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, out_default: str | None = None) -> None:
        p.add_argument("--out", default=out_default, required=out_default is None,
                       help="results folder (created; one folder per analysis)")
        p.add_argument("--seed", type=int, default=0, help="random_state of the analysis (default 0)")
        p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
        p.add_argument("--param", action="append", metavar="STEP.NAME=VALUE",
                       help="set a step parameter, e.g. decode.decoder=contrastive (repeatable)")
        p.add_argument("--resume", action="store_true", help="continue an analysis in --out")
        p.add_argument("--preset", choices=sorted(PRESETS),
                       help="a paper's own settings: sdc-iclr2025 = Efird et al.'s ICLR 2025 decoders (contrastive, "
                            "single trials, noise ceiling >= 8%% from the non-test repeats, 50 reruns, no early "
                            "stopping) and shared concepts (decoder columns, eps 0.6); --param overrides them")
        p.add_argument("--threads", type=int, metavar="N",
                       help="CPU threads for torch and the BLAS/OpenMP libraries (default: every core); give "
                            "analyses that run side by side a share each, e.g. --threads 1 on 2 cores")
        p.add_argument("--quiet", action="store_true", help="no progress output")
        p.add_argument("--scheduler", metavar="local|ADDRESS",
                       help="spread the subjects' decoders and voxel masks over dask: local (a LocalCluster on "
                            "this machine) or a running scheduler's address, e.g. tcp://host:8786 (the results "
                            "equal those of one process)")
        p.add_argument("--workers", type=int, metavar="N",
                       help="with --scheduler local: the number of worker processes (default: one per core, at "
                            "most 8)")
        p.add_argument("--model", help="CLIP model: open_clip name, local-dir:/folder or a Hugging Face CLIP "
                                       "folder (adds the 'clip' step; decode it with "
                                       "--param decode.embedding=NAME-image)")
        p.add_argument("--checkpoint", help="local weights file of the open_clip --model")
        p.add_argument("--config", help="JSON config of a custom open_clip model (registered before loading)")

    def study_args(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("study", nargs=None if required else "?",
                       help="study folder (its layout: README, section 'The study folder')")
        p.add_argument("--nsd", metavar="ROOT", help="read the Natural Scenes Dataset at ROOT instead")
        p.add_argument("--subject", type=int, action="append", help="NSD subject number (repeatable)")
        p.add_argument("--sessions", type=int, nargs="+", help="NSD sessions to read (default all)")
        p.add_argument("--betas", metavar="VERSION",
                       help="NSD betas version folder (default betas_fithrf_GLMdenoise_RR; e.g. betas_fithrf)")
        p.add_argument("--to-common", metavar="identity|FOLDER",
                       help="NSD: put the subjects in one space for the shared concepts: a FOLDER of subjXX.txt "
                            "4x4 affines (native mm → common mm), or identity")

    demo_params = ", ".join(f"{step}.{k}={v}" for step, values in DEMO_PARAMS.items() for k, v in values.items())
    p = sub.add_parser("demo", help="run the whole analysis on the built-in synthetic study",
                       description="Run the whole analysis on the built-in synthetic study. Where the papers' "
                                   "settings were set for NSD and do not fit a 600-image study, the demo uses "
                                   f"its own (--param overrides them): {demo_params}.")
    common(p, "demo_results")
    p.add_argument("--write", metavar="STUDY", help="also write the synthetic study as a study folder")
    p.add_argument("--write-only", action="store_true", help="with --write: write the study, run nothing")
    p.add_argument("--size", default="default", choices=["tiny", "small", "default"])
    p.add_argument("--steps", nargs="+", help="run only these steps (and what they need)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run the whole analysis on a study folder or NSD")
    study_args(p, required=False)
    common(p)
    p.add_argument("--steps", nargs="+", help="run only these steps (and what they need)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("view", help="open napari with a study or results folder loaded")
    p.add_argument("path", nargs="?", help="study folder or results folder (default: the synthetic study)")
    p.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the viewer and exit")
    p.set_defaults(func=cmd_view)

    for name, spec in STEPS.items():
        p = sub.add_parser(name, help=spec.help + " (runs the steps it needs too)")
        study_args(p, required=False)
        common(p)
        p.add_argument("--size", choices=["tiny", "small", "default"],
                       help="run on the synthetic study of this size (instead of a STUDY folder)")
        p.set_defaults(func=cmd_step)
    return parser


def limit_threads(n: int) -> None:
    """Run torch, BLAS and OpenMP on ``n`` threads: analyses side by side otherwise each start one thread per
    core, and their OpenMP threads then wait on one another (two on 2 cores ran about 20× slower each)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)  # for libraries not loaded yet
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)  # for those loaded already
    import torch

    torch.set_num_threads(n)


def _check_study_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One study, said once: a STUDY folder, an NSD root, or (step verbs) the synthetic study by its size."""
    if not hasattr(args, "nsd"):
        return
    size = getattr(args, "size", None)
    given = [what for what, value in (("a STUDY folder", args.study), ("--nsd ROOT", args.nsd),
                                      ("--size (the synthetic study)", size)) if value is not None]
    if len(given) > 1:
        parser.error(f"give one study: {' and '.join(given)} were both given")
    if not given:
        synthetic = "" if args.command == "run" else ", or --size tiny|small|default for the synthetic study"
        parser.error(f"{args.command} needs a STUDY folder or --nsd ROOT --subject N{synthetic}")
    # each subject and session once (--subject 1 --subject 1 reads subj01 once), as read and as recorded
    if args.subject:
        args.subject = list(dict.fromkeys(args.subject))
    if args.sessions:
        args.sessions = sorted(set(args.sessions))
    if args.nsd is None:
        ignored = [flag for flag, value in (("--subject", args.subject), ("--sessions", args.sessions),
                                            ("--betas", args.betas), ("--to-common", args.to_common))
                   if value is not None]
        if ignored:
            parser.error(f"{' and '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} for NSD: add --nsd ROOT, "
                         f"or leave {'it' if len(ignored) == 1 else 'them'} out")


def _version() -> str:
    from . import __version__

    return f"brain-concepts {__version__}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning on the command line: ``warning: MESSAGE`` on one line of stderr, without the source path and
    line of code Python prints (the project's warnings name the file or participant themselves)."""
    text = " ".join(str(message).split())
    kind = "" if issubclass(category, UserWarning) else f" ({category.__name__})"
    print(f"warning{kind}: {text}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_study_args(parser, args)
    if getattr(args, "workers", None) is not None and (args.workers < 1 or args.scheduler != "local"):
        parser.error("--workers must be at least 1" if args.workers < 1 else "--workers needs --scheduler local")
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        limit_threads(args.threads)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line each, as the errors are
            if getattr(args, "param", None):
                from .core.pipeline import check_params

                check_params(parse_params(args.param))  # before a study is loaded
            close = None
            if getattr(args, "scheduler", None):  # one dask client for the analysis, found before the study is read
                from .core.distributed import connect

                args.client, close = connect(args.scheduler, n_workers=args.workers)
            try:
                return int(args.func(args) or 0)
            finally:
                if close is not None:
                    close()
    except BrainConceptsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        if getattr(args, "finished", False):
            print(f"stopped; the analysis had finished: its results are in {args.out}", file=sys.stderr)
        else:
            print("stopped" if getattr(stop, "reported", False) else "stopped before any step ran; nothing was "
                  "written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
