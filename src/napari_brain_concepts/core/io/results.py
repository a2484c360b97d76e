"""The results store: one folder per analysis, every file written atomically.

::

    RESULTS/
      manifest.json                        parameters, seeds, versions, finished steps
      subjects/SUBJ/maps/NAME.nii.gz       float maps in the subject's own space
      subjects/SUBJ/masks/CONCEPT.nii.gz   hard concept masks (uint8 0/1)
      shared/CONCEPT.nii.gz                n-of-N overlap counts in the common space
      tables/NAME.tsv  figures/NAME.png  arrays/NAME.npy|.npz
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .atomic import write_atomic, write_text_atomic
from .volumes import load_nifti, save_nifti

STORE_VERSION = 1
#: folders a store writes; a new (not resumed) analysis in an existing store removes them first
_RESULT_FOLDERS = ("subjects", "shared", "tables", "figures", "arrays", ".staging", ".checkpoints")
_EARLIER = ".earlier"  # an earlier analysis's results, set aside while a new one runs in the folder
_VERSIONED = ("napari-brain-concepts", "numpy", "scipy", "torch", "nibabel", "nilearn", "scikit-learn",
              "transformers", "open_clip_torch", "pandas")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            continue
    return out


def _is_analysis(parameters: Any) -> bool:
    """Parameters of an analysis run from the command line: ``{"params": {step: {...}}, "seed", "steps"}``."""
    return isinstance(parameters, dict) and isinstance(parameters.get("params"), dict)


def _resume_conflict(old: Any, new: Any, finished: list[str]) -> str | None:
    """Why results made with ``old`` parameters cannot be continued with ``new`` ones (``None``: they can).

    An analysis may be continued with another step list and with other parameters of the steps it has not
    finished (one failed there, or a step is added); the seed and the parameters of its finished steps must
    stay, as the results on disk were made with them.
    """
    if old in ({}, None) or old == new:
        return None
    if not (_is_analysis(old) and _is_analysis(new)):
        return ""
    if old.get("seed") != new.get("seed"):
        return f": --seed {old.get('seed')} (now {new.get('seed')})"
    changed = []
    for step in finished:
        given_a, given_b = old["params"].get(step) or {}, new["params"].get(step) or {}
        a, b = _every_value(step, given_a), _every_value(step, given_b)

        def show(values, given, k):
            return "(default)" if k not in values else json.dumps(values[k]) + ("" if k in given else " (default)")

        changed += [f"{step}.{k}={show(a, given_a, k)} (now {show(b, given_b, k)})"
                    for k in sorted(set(a) | set(b)) if a.get(k, ...) != b.get(k, ...)]
    return f" for its finished steps: {', '.join(changed)}" if changed else None


def _every_value(step: str, given: Any) -> dict[str, Any]:
    """A step's values with its defaults filled in, so that a value given as its default (napari's forms give
    every value they show) equals the default left out (the command line records only ``--param`` values)."""
    from ..pipeline import STEPS, step_values

    return step_values(step, given) if step in STEPS else dict(given or {})


def _resumed_parameters(old: Any, new: Any) -> Any:
    """The parameters of a continued analysis: the new values, and every step either run asked for."""
    if not (_is_analysis(old) and _is_analysis(new)):
        return old
    steps = None
    if old.get("steps") is not None and new.get("steps") is not None:
        steps = list(dict.fromkeys([*old["steps"], *new["steps"]]))
    return {**new, "steps": steps}


def _key_text(key: dict[str, Any]) -> str:
    """A checkpoint's key as the text it is stored and compared as."""
    return json.dumps(_jsonable(key), sort_keys=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


#: the folders of a study folder its reader reads: results written into one of them break the study
_STUDY_DATA = ("subjects", "embeddings", "images", "truth")


def check_results_folder(root: str | os.PathLike) -> None:
    """Refuse a results folder that is a file, a study folder, inside the folders a study's reader reads, or in
    an NSD copy: :meth:`ResultsStore.create` checks it, and the command line before it reads a study (NSD's
    betas take minutes to hours to read)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(root, "exists and is not a folder", "choose a folder path for --out")
    if (root / "study.json").is_file():  # a new analysis clears subjects/: the study's own data
        raise InputError(root, "is a study folder (it holds study.json)", "write the results to another "
                         "folder, e.g. --out results beside the study")
    _check_not_in_study(root)


def _check_not_in_study(root: Path) -> None:
    """Refuse results inside the folders a study's reader reads (``STUDY/subjects/…``: the next read would take
    the results' folders for participants); elsewhere in a study folder (``STUDY/derivatives/…``) is fine.
    Refuse them in an NSD copy (a root holding ``nsddata/`` and ``nsddata_betas/``), or in any folder of it."""
    from .nsd import is_nsd_root

    where = root.resolve()
    for folder in (where, *where.parents):  # an NSD copy is data, read by many: not a word of it changes
        if is_nsd_root(folder):
            raise InputError(root, f"is {'' if folder == where else 'inside '}the NSD copy at {folder}: the "
                             "results would be written into the dataset",
                             f"write the results to a folder outside it, e.g. --out {folder.parent / 'nsd_results'}")
    for folder in where.parents:
        if (folder / "study.json").is_file():
            part = where.relative_to(folder).parts[0]
            if part in _STUDY_DATA:
                raise InputError(root, f"is inside the {part}/ folder of the study folder {folder}, which its "
                                 "reader reads: the results would break the study",
                                 "write the results to another folder, e.g. --out results beside the study")
            return


def file_name(name: str, what: str) -> str:
    """``name`` when it can name a file of the results folder (a map, mask, table or figure), else an error:
    a category label ``indoor/outdoor`` would put its maps in a subfolder no reader looks in."""
    text = str(name)
    if not text.strip() or text.startswith(".") or any(c in text for c in "/\\\0"):
        raise InputError(f"{what} {text!r}", "cannot name a file of the results folder (it is empty, starts "
                         "with '.' or holds '/', '\\' or a NUL)",
                         "rename it with letters, digits, spaces, '-', '_' or '.' (a category: in stimuli.tsv)")
    return text


class ResultsStore:
    """A results folder. Create with :meth:`create` (new or resumed analysis) or :meth:`open` (read)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._manifest: dict[str, Any] | None = None
        self._stage: Path | None = None
        self._pending: dict[str, dict[str, Any]] = {}

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, parameters: dict[str, Any] | None = None,
               study: str | None = None, resume: bool = False, overwrite: bool = False,
               keep_earlier: bool = False, fingerprint: str | None = None) -> ResultsStore:
        """Start (or with ``resume=True`` continue) an analysis in ``root``.

        A folder that holds results is refused unless ``resume`` or ``overwrite``. Starting a new analysis
        there with ``overwrite=True`` removes the earlier results (subjects/, shared/, tables/, figures/,
        arrays/) so that none of them is taken for a result of the new analysis; other files in the folder
        are left alone. With ``keep_earlier`` they are
        set aside in ``.earlier/`` instead, until :meth:`restore_earlier` (the new analysis failed) or
        :meth:`drop_earlier` (it finished). ``fingerprint`` (:meth:`Study.fingerprint`) is recorded, and a
        resumed analysis must come with the same one: the study's data, not only its name.
        """
        store = cls(root)
        root = store.root
        check_results_folder(root)
        if (root / "manifest.json").is_file():
            manifest = store.manifest  # validates version
            if resume:
                store.check_made_from(study, fingerprint, "continue it with the study and data it was made "
                                      "from, or write the results of this study to a new folder")
                if parameters is not None:
                    new = _jsonable(parameters)
                    finished = list(manifest.get("steps") or {})
                    conflict = _resume_conflict(manifest.get("parameters"), new, finished)
                    if conflict is not None:
                        preset = (manifest.get("parameters") or {}).get("preset")
                        same = (f"resume with the same parameters (--preset {preset}, as they were made)"
                                if preset and preset != new.get("preset") else "resume with the same parameters")
                        raise InputError(root / "manifest.json", f"was written with other parameters{conflict}",
                                         f"{same} or write to a new folder")
                    merged = _resumed_parameters(manifest.get("parameters"), new)
                    if merged != manifest.get("parameters"):
                        store.manifest["parameters"] = merged
                        store._save_manifest()
                return store
            if not overwrite:
                raise InputError(root, "already holds results", "choose another --out folder or pass --resume")
            shutil.rmtree(root / _EARLIER, ignore_errors=True)  # an older analysis's, left by an interrupted run
            store._clear_results(keep=keep_earlier)
            store._manifest = None
        root.mkdir(parents=True, exist_ok=True)
        store._manifest = {
            "format": "napari-brain-concepts results",
            "version": STORE_VERSION,
            "study": study,
            "study_fingerprint": fingerprint,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "parameters": _jsonable(parameters or {}),
            "versions": package_versions(),
            "steps": {},
        }
        store._save_manifest()
        return store

    def record_parameters(self, step: str, values: dict[str, Any] | None, seed: int | None,
                          asked: bool = True) -> None:
        """Record in the manifest the parameters ``step`` finished with (the values given, not the defaults)
        and the seed, as the command line records its ``--param`` values: a later ``--resume`` is checked
        against them, whether the results were made from the command line, Python or napari. A step
        ``asked`` for (not run only because another needs it) joins the manifest's list of steps. A manifest
        that holds parameters of another form (not an analysis's) is left alone."""
        parameters = self.manifest.get("parameters")
        if parameters in ({}, None):
            parameters = {"params": {}, "seed": seed, "steps": []}
        if not _is_analysis(parameters):
            return
        params = dict(parameters["params"])
        if values:
            params[step] = _jsonable(values)
        else:
            params.pop(step, None)
        steps = list(dict.fromkeys([*(parameters.get("steps") or []), *([step] if asked else [])]))
        self.manifest["parameters"] = {**parameters, "params": params, "seed": seed, "steps": steps}
        self._save_manifest()

    def check_made_from(self, study: str | None, fingerprint: str | None, fix: str) -> None:
        """Refuse these results for study ``study`` (name) with data ``fingerprint`` (:meth:`Study.fingerprint`)
        when they were made from another study, or from other data under the same name (``None``: not known)."""
        made, where = self.manifest, self.root / "manifest.json"
        if study is not None and made.get("study") not in (None, study):
            raise InputError(where, f"holds the results of study {made['study']!r}, not of {study!r}", fix)
        if fingerprint is not None and made.get("study_fingerprint") not in (None, fingerprint):
            raise InputError(where, f"holds the results of study {made.get('study')!r} made from other data (its "
                             "stimuli, masks, trials or responses differ)", fix)

    def _clear_results(self, keep: bool = False) -> None:
        """Remove the results of an earlier analysis, so none of them passes for a result of the new one; with
        ``keep``, move them (and their manifest) to ``.earlier/`` instead, for :meth:`restore_earlier`."""
        if keep:
            earlier = self.root / _EARLIER
            earlier.mkdir()
            for name in (*_RESULT_FOLDERS, "manifest.json"):
                if (self.root / name).exists():
                    (self.root / name).rename(earlier / name)
            return
        for sub in _RESULT_FOLDERS:
            shutil.rmtree(self.root / sub, ignore_errors=True)

    def restore_earlier(self) -> bool:
        """Put back the results that ``create(..., keep_earlier=True)`` set aside, in place of this analysis's
        (after it failed); False when there were none."""
        earlier = self.root / _EARLIER
        if not earlier.is_dir():
            return False
        self._clear_results()
        (self.root / "manifest.json").unlink(missing_ok=True)
        for path in earlier.iterdir():
            path.rename(self.root / path.name)
        earlier.rmdir()
        self._manifest = None
        return True

    def discard_if_empty(self) -> bool:
        """Remove what a new analysis that failed before finishing any step left (its manifest and empty
        result folders; the folder itself when nothing else is in it). False when a step had finished, or
        had kept checkpoints (:meth:`write_checkpoint`: the decoders of the participants fitted before a
        stop), which ``--resume`` continues from."""
        if self.finished_steps or self.checkpoints():
            return False
        for sub in _RESULT_FOLDERS:
            folder = self.root / sub
            if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
                shutil.rmtree(folder)
        (self.root / "manifest.json").unlink(missing_ok=True)
        self._manifest = None
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()
        return True

    # -- checkpoints -------------------------------------------------------------------------------
    def _checkpoint_path(self, step: str, name: str) -> Path:
        return self.root / ".checkpoints" / step / f"{file_name(name, 'checkpoint')}.npz"

    def write_checkpoint(self, step: str, name: str, key: dict[str, Any], **arrays: np.ndarray) -> Path:
        """Keep a piece of a running step (one participant's fitted decoder) outside its staging folder, so
        that a step stopped or failed after it can continue from it: ``key`` (the values it was made with)
        must come back equal for :meth:`read_checkpoint` to give it back. A step's checkpoints go when it
        finishes (:meth:`staged`) and with the results of the analysis (a new analysis in the folder)."""
        return write_atomic(self._checkpoint_path(step, name),
                            lambda p: np.savez(p, checkpoint_key=np.array(_key_text(key)),
                                               **{k: np.asarray(v) for k, v in arrays.items()}))

    def read_checkpoint(self, step: str, name: str, key: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """The arrays :meth:`write_checkpoint` kept for ``name`` with this ``key``; None when there are none,
        or when they were made with other values (or cannot be read: a checkpoint is only a shortcut)."""
        path = self._checkpoint_path(step, name)
        if self._checkpoint_key(path) != _key_text(key):
            return None
        return self._load_checkpoint(path, lambda z: {k: z[k] for k in z.files if k != "checkpoint_key"})

    def _checkpoint_key(self, path: Path) -> str | None:
        """The key text of a checkpoint file, read alone (an npz member loads on its own)."""
        return self._load_checkpoint(path, lambda z: str(z["checkpoint_key"]))

    @staticmethod
    def _load_checkpoint(path: Path, read: Any) -> Any:
        """``read(npz)`` of a checkpoint file; None when there is none, or it cannot be read (a damaged or
        half-copied folder: it is removed, so it never stops a step)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return read(z)
        except Exception:  # zipfile.BadZipFile, EOFError, a bad CRC, a missing key, a pickled array …
            path.unlink(missing_ok=True)
            return None

    def checkpoints(self, step: str | None = None) -> list[str]:
        """The names of the pieces kept by :meth:`write_checkpoint` (of ``step``, or of every step)."""
        base = self.root / ".checkpoints"
        folders = [base / step] if step else (sorted(p for p in base.iterdir() if p.is_dir())
                                              if base.is_dir() else [])
        return [p.name[:-4] for folder in folders for p in sorted(folder.glob("*.npz"))]

    def drop_checkpoints(self, step: str, unless: dict[str, Any] | None = None) -> None:
        """Remove the checkpoints of ``step``: all of them, or (``unless``) those made with another key, which a
        run with this key can never use."""
        folder = self.root / ".checkpoints" / step
        if unless is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
                if self._checkpoint_key(path) not in (None, _key_text(unless)):
                    path.unlink(missing_ok=True)
        for empty in (folder, self.root / ".checkpoints"):
            with contextlib.suppress(OSError):
                empty.rmdir()

    def drop_earlier(self) -> None:
        """Delete the results set aside by ``create(..., keep_earlier=True)`` (the new analysis finished)."""
        shutil.rmtree(self.root / _EARLIER, ignore_errors=True)

    @classmethod
    def open(cls, root: str | os.PathLike) -> ResultsStore:
        store = cls(root)
        _ = store.manifest
        return store

    @staticmethod
    def is_results(path: str | os.PathLike) -> bool:
        return (Path(path) / "manifest.json").is_file()

    # -- manifest ----------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            path = self.root / "manifest.json"
            if not path.is_file():
                raise InputError(self.root, "is not a results folder (no manifest.json)",
                                 "point at a folder written by `brain-concepts run` or `demo`")
            try:
                self._manifest = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise InputError(path, f"is not valid JSON ({err})", "delete the folder and rerun the analysis") from err
            version = self._manifest.get("version")
            if not isinstance(version, int) or version > STORE_VERSION:
                raise InputError(path, f"was written by a newer version of the format ({version!r} > {STORE_VERSION})",
                                 "upgrade napari-brain-concepts to read it")
        return self._manifest

    def _save_manifest(self) -> None:
        write_text_atomic(self.root / "manifest.json", json.dumps(_jsonable(self.manifest), indent=2) + "\n")

    @property
    def parameters(self) -> dict[str, Any]:
        return self.manifest.get("parameters", {})

    def is_done(self, step: str) -> bool:
        return step in self.manifest.get("steps", {})

    def mark_done(self, step: str, **info: Any) -> None:
        """Record that ``step`` finished (inside :meth:`staged`, once its files are moved in place)."""
        entry = {"finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **_jsonable(info)}
        if self._stage is not None:
            self._pending[step] = entry
            return
        self.manifest.setdefault("steps", {})[step] = entry
        self._save_manifest()

    @contextlib.contextmanager
    def staged(self, step: str, commit: bool = True) -> Iterator[ResultsStore]:
        """Write everything of ``step`` to a staging folder; move it in place only when the step finishes.

        A step that raises, is cancelled (its generator closed) or is killed leaves the results folder as it
        was before the step: earlier results intact, nothing half-written, the step not marked done. With
        ``commit=False`` the staged files are dropped even on success (a finished step rerun in memory only,
        to rebuild what a resumed later step needs).
        """
        stage = self.root / ".staging" / step
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        self._stage, self._pending = stage, {}
        try:
            yield self
        except BaseException:
            self._stage, self._pending = None, {}
            shutil.rmtree(stage, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.root / ".staging").rmdir()
            raise
        self._stage = None
        if not commit:
            self._pending = {}
            shutil.rmtree(stage, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.root / ".staging").rmdir()
            return
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = self.root / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / ".staging").rmdir()
        pending, self._pending = self._pending, {}
        if pending:
            self.manifest.setdefault("steps", {}).update(pending)
            self._save_manifest()
        self.drop_checkpoints(step)  # the step finished: its pieces are in its results

    def update(self, **fields: Any) -> None:
        self.manifest.update(_jsonable(fields))
        self._save_manifest()

    @property
    def finished_steps(self) -> list[str]:
        return list(self.manifest.get("steps", {}))

    # -- paths -------------------------------------------------------------------------------------
    @property
    def base(self) -> Path:
        """Where files are written now: the staging folder of the running step, or the root."""
        return self._stage if self._stage is not None else self.root

    def _find(self, rel: str | Path) -> Path:
        """A file to read: the running step's staged copy first, then the finished one."""
        if self._stage is not None and (self._stage / rel).exists():
            return self._stage / rel
        return self.root / rel

    def map_path(self, subject: str, name: str) -> Path:
        return self.base / "subjects" / file_name(subject, "participant") / "maps" / f"{file_name(name, 'map')}.nii.gz"

    def mask_path(self, subject: str, concept: str) -> Path:
        return (self.base / "subjects" / file_name(subject, "participant") / "masks"
                / f"{file_name(concept, 'mask')}.nii.gz")

    def table_path(self, name: str) -> Path:
        return self.base / "tables" / f"{file_name(name, 'table')}.tsv"

    def figure_path(self, name: str) -> Path:
        return self.base / "figures" / f"{file_name(name, 'figure')}.png"

    def array_path(self, name: str, ext: str = ".npy") -> Path:
        return self.base / "arrays" / f"{name}{ext}"

    # -- writers -----------------------------------------------------------------------------------
    def write_map(self, subject: str, name: str, volume: np.ndarray, affine: np.ndarray) -> Path:
        return save_nifti(np.asarray(volume, dtype=np.float32), affine, self.map_path(subject, name))

    def write_mask(self, subject: str, concept: str, volume: np.ndarray, affine: np.ndarray) -> Path:
        return save_nifti(np.asarray(volume).astype(np.uint8), affine, self.mask_path(subject, concept))

    def write_shared(self, concept: str, counts: np.ndarray, affine: np.ndarray) -> Path:
        return save_nifti(counts, affine, self.base / "shared" / f"{concept}.nii.gz", dtype=np.int16)

    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        return write_atomic(self.table_path(name),
                            lambda p: table.to_csv(p, sep="\t", index=False, float_format="%.6g"))

    def write_figure(self, name: str, figure) -> Path:
        return write_atomic(self.figure_path(name), lambda p: figure.savefig(p, dpi=110, bbox_inches="tight",
                                                                            format="png"))

    def write_array(self, name: str, array: np.ndarray) -> Path:
        return write_atomic(self.array_path(name), lambda p: np.save(p, np.asarray(array), allow_pickle=False))

    def write_arrays(self, name: str, **arrays: np.ndarray) -> Path:
        return write_atomic(self.array_path(name, ".npz"),
                            lambda p: np.savez(p, **{k: np.asarray(v) for k, v in arrays.items()}))

    def write_json(self, relpath: str, obj: Any) -> Path:
        return write_text_atomic(self.base / relpath, json.dumps(_jsonable(obj), indent=2) + "\n")

    # -- readers -----------------------------------------------------------------------------------
    def read_table(self, name: str) -> pd.DataFrame:
        path = self._find(Path("tables") / f"{name}.tsv")
        if not path.is_file():
            raise InputError(path, "table is missing", "run the step that writes it")
        return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])

    def read_array(self, name: str) -> np.ndarray:
        path = self._find(Path("arrays") / f"{name}.npy")
        if not path.is_file():
            raise InputError(path, "array is missing", "run the step that writes it")
        return np.load(path, allow_pickle=False)

    def read_arrays(self, name: str) -> dict[str, np.ndarray]:
        path = self._find(Path("arrays") / f"{name}.npz")
        if not path.is_file():
            raise InputError(path, "array file is missing", "run the step that writes it")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def subjects(self) -> list[str]:
        base = self.root / "subjects"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def maps(self, subject: str) -> dict[str, Path]:
        folder = self.root / "subjects" / subject / "maps"
        return {p.name[:-7]: p for p in sorted(folder.glob("*.nii.gz"))} if folder.is_dir() else {}

    def masks(self, subject: str) -> dict[str, Path]:
        folder = self.root / "subjects" / subject / "masks"
        return {p.name[:-7]: p for p in sorted(folder.glob("*.nii.gz"))} if folder.is_dir() else {}

    def shared_maps(self) -> dict[str, Path]:
        folder = self.root / "shared"
        return {p.name[:-7]: p for p in sorted(folder.glob("*.nii.gz"))} if folder.is_dir() else {}

    def read_map(self, path: str | os.PathLike):
        return load_nifti(path, what="map")


#: in a copy made by :func:`copy_results`: the folder it was copied from (a later copy of the same folder may
#: replace it; another analysis's results folder is never replaced)
COPIED_FROM = ".copied-from"


def check_results_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Refuse, before anything is written, a copy of the results folder ``src`` to ``dest`` that
    :func:`copy_results` must not make: ``dest`` inside ``src`` (or ``src`` itself), a file, a folder of other
    files, or a results folder other than an earlier copy of ``src`` (another analysis)."""
    src, dest = Path(src).resolve(), Path(dest).resolve()
    if not ResultsStore.is_results(src):
        raise InputError(src, "is not a results folder (no manifest.json)", "give a folder written by an analysis")
    if dest == src or src in dest.parents:
        raise InputError(dest, f"{'is' if dest == src else 'lies inside'} the results folder {src}",
                         "copy it to a folder outside that one")
    if not dest.exists():
        return
    if not dest.is_dir() or (not ResultsStore.is_results(dest) and any(dest.iterdir())):
        raise InputError(dest, "exists and is not a results folder", "choose a new or empty folder, or another name")
    marker = dest / COPIED_FROM
    if ResultsStore.is_results(dest) and not (marker.is_file() and marker.read_text(encoding="utf-8").strip()
                                              == str(src)):
        raise InputError(dest, "holds the results of another analysis", "choose another folder, or move them")


def copy_results(src: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Copy the results folder ``src`` to ``dest`` whole (every participant's maps and masks, the decoders, the
    tables, the manifest), so that it opens again as a results folder; returns the files written.

    The copy is made beside ``dest`` under a temporary name and then takes its place: an earlier copy of ``src``
    at ``dest`` is replaced only once the new one is complete, and a failed copy leaves nothing behind and the
    earlier copy in place. What is refused: :func:`check_results_copy`."""
    import uuid

    check_results_copy(src, dest)
    src, dest = Path(src).resolve(), Path(dest).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    written: list[Path] = []

    def copy(a: str, b: str) -> str:
        shutil.copy2(a, b)
        written.append(dest / Path(b).relative_to(partial))
        return b

    old = None
    try:
        shutil.copytree(src, partial, copy_function=copy)
        (partial / COPIED_FROM).write_text(f"{src}\n", encoding="utf-8")
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            dest.rename(old)
        partial.rename(dest)
    except BaseException:
        if old is not None and not dest.exists():
            old.rename(dest)  # the earlier copy back in its place
            old = None
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return written
