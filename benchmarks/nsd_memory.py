"""Peak memory of loading one NSD-shaped subject: the streaming reader vs a naive get_fdata() loader.

The benchmark writes an NSD tree for one subject at full size: the 81 × 104 × 83 func1pt8mm grid of
subj01, an nsdgeneral-sized mask (15,724 voxels), 750-trial int16 sessions as NSD ships them (hdf5 with
one chunk per voxel, axes reversed; and .nii.gz for the naive loader), the real design size (30,000
trials, 10,000 images per subject, 73,000 images) and COCO-sized caption files. Each measurement runs in
a fresh subprocess, which reports its own peak resident set size (``VmHWM``), so runs do not
influence each other.

Sessions beyond the first ``--files`` (default 6) are hard links to the written files (each 1.1 GB of
int16 on disk), so a full 40-session subject is measured rather than extrapolated; reading a linked file
costs the same memory as reading a distinct one, only its values repeat.

Rows: ``read_nsd`` single trials (SDC protocol), ``read_nsd(average_repeats=True)`` (MindEye protocol),
and a naive loader that calls ``nib.load(betas_sessionNN.nii.gz).get_fdata()`` per session, masks it,
z-scores it and concatenates the sessions. Columns: peak per session count, the least-squares slope per
session (in MiB and as a multiple of one session's float32 responses, 45 MiB), the slope of peak against
the size of the returned responses over the last interval (``peak/resp``: 1.0 = nothing grows but the
result), and the 40-session peak (measured, or extrapolated along ``peak/resp`` when 40 is not among
the counts). The COCO caption files (about 2/3 of COCO's size) are parsed before the betas are read,
the large ones in a short-lived child process of the reader whose memory is not in these figures.

Run: ``python benchmarks/nsd_memory.py [--sessions 1 2 4 8 16 40] [--files 6] [--naive-sessions 1 2]
[--root DIR] [--keep]`` (about 20 minutes and 8 GB of disk on 2 cores; the tree is deleted afterwards
unless ``--root`` is given or ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = (81, 104, 83)
N_MASK = 15_724
TRIALS = 750


def _peak_mb() -> float:
    """Peak resident set size of this process image (VmHWM; ru_maxrss would carry the parent's peak
    over fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------ tree writing


def build_tree(root: Path, n_sessions: int, n_nifti: int, seed: int = 0) -> None:
    import h5py
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(REPO))
    from tests.core.nsd_fixture import _affine, _closest_voxels, _ellipsoid, _save, write_design

    nib.openers.Opener.default_compresslevel = 1
    rng = np.random.default_rng(seed)
    t0 = time.time()
    write_design(root, n_sessions_design=40, trials_per_session=TRIALS, n_shared=1000, n_images=73_000,
                 image_size=8, rng=rng)
    centre = (np.asarray(GRID) - 1) / 2.0
    brain = _ellipsoid(GRID, centre, np.asarray(GRID) / 2.0 - 2)
    general = _closest_voxels(brain, centre + np.array([0.0, -30.0, -5.0]) * [1, 1, 1], N_MASK)
    aff = _affine(GRID)
    func = root / "nsddata/ppdata/subj01/func1pt8mm"
    _save(brain.astype(np.int16), aff, func / "brainmask.nii.gz", np.int16)
    _save(np.where(brain, general.astype(np.int16), -1).astype(np.int16), aff, func / "roi/nsdgeneral.nii.gz",
          np.int16)
    _save(np.where(brain, 500.0, 0.0).astype(np.float32), aff, func / "T1_to_func1pt8mm.nii.gz", np.float32)
    betas = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    betas.mkdir(parents=True, exist_ok=True)
    _save(np.where(brain, 0.5, 0.0).astype(np.float32), aff, betas / "ncsnr.nii.gz", np.float32)
    brain_zyx = brain.transpose(2, 1, 0)
    base = rng.integers(-900, 900, size=(TRIALS, int(brain.sum())), dtype=np.int16)
    vol = np.zeros((TRIALS,) + GRID[::-1], dtype=np.int16)         # one session in h5py order
    for s in range(1, n_sessions + 1):
        vol[:, brain_zyx] = base
        vol[:, brain_zyx] += np.int16(s)
        with h5py.File(betas / f"betas_session{s:02d}.hdf5", "w") as f:
            ds = f.create_dataset("betas", shape=vol.shape, dtype=np.int16, chunks=(TRIALS, 1, 1, 1))
            for z in range(vol.shape[1]):
                ds[:, z] = vol[:, z]
        if s <= n_nifti:                                           # kept apart: the reader prefers hdf5
            img = nib.Nifti1Image(vol.transpose(3, 2, 1, 0), aff)
            img.set_data_dtype(np.int16)
            (betas.parent / "nifti").mkdir(exist_ok=True)
            nib.save(img, str(betas.parent / "nifti" / f"betas_session{s:02d}.nii.gz"))
        print(f"  wrote session {s} ({time.time() - t0:.0f} s)", flush=True)


# ------------------------------------------------------------------------------------------ children


def child_stream(root: str, n: int, average: bool) -> dict:
    import numpy as np  # noqa: F401

    from napari_brain_concepts.core.io.nsd import read_nsd

    base = _peak_mb()
    t = time.perf_counter()
    study = read_nsd(root, 1, sessions=range(1, n + 1), average_repeats=average, images=False)
    seconds = time.perf_counter() - t
    subj = study.subjects["subj01"]
    return {"peak_mb": _peak_mb(), "base_mb": base, "seconds": seconds, "shape": list(subj.responses.shape),
            "result_mb": subj.responses.nbytes / 2**20}


def child_naive(root: str, n: int) -> dict:
    import nibabel as nib
    import numpy as np

    base = _peak_mb()
    t = time.perf_counter()
    func = Path(root) / "nsddata/ppdata/subj01/func1pt8mm"
    mask = nib.load(str(func / "roi/nsdgeneral.nii.gz")).get_fdata() > 0
    blocks = []
    folder = Path(root) / "nsddata_betas/ppdata/subj01/func1pt8mm/nifti"
    for s in range(1, n + 1):
        data = nib.load(str(folder / f"betas_session{s:02d}.nii.gz")).get_fdata()   # float64, whole brain
        x = data[mask].T / 300.0
        del data
        x = (x - x.mean(axis=0)) / x.std(axis=0)
        blocks.append(x.astype(np.float32))
    responses = np.concatenate(blocks)
    seconds = time.perf_counter() - t
    return {"peak_mb": _peak_mb(), "base_mb": base, "seconds": seconds, "shape": list(responses.shape),
            "result_mb": responses.nbytes / 2**20}


def run_child(kind: str, root: Path, n: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--root", str(root), "--n", str(n)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ main


def link_sessions(root: Path, n_files: int, n_sessions: int) -> None:
    """Sessions ``n_files + 1 .. n_sessions`` as hard links to the written files ``1 .. n_files``.

    Each is a complete 750-trial session file (same bytes, same size, read like any other); only its
    values repeat those of an earlier session, which does not change how much memory reading it takes.
    So 40 sessions are measured, not extrapolated, without 44 GB of disk.
    """
    betas = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    for s in range(n_files + 1, n_sessions + 1):
        link = betas / f"betas_session{s:02d}.hdf5"
        if not link.exists():
            os.link(betas / f"betas_session{(s - 1) % n_files + 1:02d}.hdf5", link)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8, 16, 40])
    p.add_argument("--files", type=int, default=6,
                   help="distinct session files written; higher sessions are hard links to them")
    p.add_argument("--naive-sessions", type=int, nargs="+", default=[1, 2])
    p.add_argument("--root", type=Path, default=None, help="existing or new benchmark tree")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--child", choices=["stream", "average", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        if args.child == "naive":
            res = child_naive(str(args.root), args.n)
        else:
            res = child_stream(str(args.root), args.n, args.child == "average")
        print(json.dumps(res))
        return


    if max(args.sessions) > 40:
        p.error("NSD subjects have at most 40 sessions")
    root = args.root or Path(tempfile.mkdtemp(prefix="nsd_memory_"))
    marker = root / "benchmark_tree.json"
    n_files = min(args.files, max(args.sessions))
    wanted = {"sessions": n_files, "nifti": max(args.naive_sessions)}
    if not marker.is_file() or json.loads(marker.read_text()) != wanted:
        print(f"writing the NSD-shaped tree under {root} ...", flush=True)
        build_tree(root, wanted["sessions"], wanted["nifti"])
        marker.write_text(json.dumps(wanted))
    link_sessions(root, n_files, max(args.sessions))
    try:
        rows = {"read_nsd (single trials)": ("stream", args.sessions),
                "read_nsd (average_repeats)": ("average", args.sessions),
                "naive get_fdata() per session": ("naive", args.naive_sessions)}
        results = {}
        for label, (kind, counts) in rows.items():
            for n in counts:
                results[(label, n)] = r = run_child(kind, root, n)
                (root / "benchmark_results.json").write_text(json.dumps(
                    [{"loader": k[0], "sessions": k[1], **v} for k, v in results.items()], indent=1))
                print(f"  {label:32s} {n:2d} sessions: peak {r['peak_mb']:7.0f} MiB "
                      f"(after imports {r['base_mb']:.0f} MiB, responses {r['result_mb']:.0f} MiB, "
                      f"{r['seconds']:.1f} s)", flush=True)
        report(rows, results, n_files)
    finally:
        if not args.keep and args.root is None:
            shutil.rmtree(root, ignore_errors=True)


def report(rows: dict, results: dict, n_files: int) -> None:
    """Print the table: peak per session count, slopes, and the full subject (measured or extrapolated)."""
    import numpy as np

    session_mib = TRIALS * N_MASK * 4 / 2**20
    floor = 40 * session_mib
    goal = 1.5e9 / 2**20
    print()
    print(f"Peak RSS (MiB) of loading subj01-shaped data: grid {GRID}, {N_MASK} mask voxels, "
          f"{TRIALS} trials per session ({session_mib:.1f} MiB of float32 responses per session; sessions "
          f"above {n_files} are hard links to the first {n_files} files)")
    counts = sorted({n for _, n in results})
    print(f"{'loader':32s}" + "".join(f"{n:>7d}" for n in counts)
          + f"{'MiB/sess':>10s}{'x sess':>8s}{'peak/resp':>10s}{'40 sess':>9s}")
    # 40 sessions of NSD: 30,000 single trials, or 10,000 images when repeats are averaged
    full = {"stream": 40 * TRIALS, "average": 10_000, "naive": 40 * TRIALS}
    at40 = {}
    for label, (kind, ns) in rows.items():
        ns = sorted(ns)
        peaks = np.array([results[(label, n)]["peak_mb"] for n in ns])
        resp = np.array([results[(label, n)]["result_mb"] for n in ns])
        per_session = np.polyfit(ns, peaks, 1)[0] if len(ns) > 1 else float("nan")
        # Peak against the size of the responses over the last interval (averaging makes the responses
        # grow with the number of distinct images, not with the sessions): 1.0 = nothing grows but them.
        b = (peaks[-1] - peaks[-2]) / (resp[-1] - resp[-2]) if len(ns) > 1 else float("nan")
        if ns[-1] == 40:
            at40[label], how = peaks[-1], " "
        else:
            at40[label], how = peaks[-1] + b * (full[kind] * N_MASK * 4 / 2**20 - resp[-1]), "*"
        cells = "".join(f"{results[(label, n)]['peak_mb']:7.0f}" if (label, n) in results else f"{'':7s}"
                        for n in counts)
        print(f"{label:32s}{cells}{per_session:10.1f}{per_session / session_mib:8.2f}{b:10.2f}"
              f"{at40[label]:8.0f}{how}")
    print("MiB/sess: least-squares slope of peak vs sessions; x sess: that slope / one session's float32 "
          "responses; peak/resp: slope of peak vs size of the responses over the last interval; "
          "40 sess: measured, or (*) extrapolated along peak/resp")
    print()
    print("ratios, naive / read_nsd single trials, same session count:")
    for label, (kind, ns) in rows.items():
        if kind == "naive":
            for n in ns:
                if ("read_nsd (single trials)", n) in results:
                    ratio = results[(label, n)]["peak_mb"] / results[("read_nsd (single trials)", n)]["peak_mb"]
                    print(f"  {n} session(s): {ratio:.1f}x")
    single = at40["read_nsd (single trials)"]
    print(f"40 sessions, single trials: the float32 responses alone take {floor:.0f} MiB "
          f"(30,000 x {N_MASK} x 4 bytes = {floor * 2**20 / 1e9:.2f} GB); peak {single:.0f} MiB = "
          f"{single * 2**20 / 1e9:.2f} GB, {single - floor:.0f} MiB above the responses")
    if floor > goal:
        print(f"  the goal of 1.5 GB ({goal:.0f} MiB) is below the size of the float32 result itself, so it "
              f"cannot be met for single trials at {N_MASK} voxels; it is met up to "
              f"{int((goal - (single - floor)) / session_mib)} sessions at this overhead")
    print(f"40 sessions, repeats averaged (10,000 images, {10_000 * N_MASK * 4 / 2**20:.0f} MiB of responses): "
          f"peak {at40['read_nsd (average_repeats)']:.0f} MiB; goal 1.5 GB = {goal:.0f} MiB")


if __name__ == "__main__":
    main()
