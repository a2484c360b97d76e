"""Run independent pieces of an analysis on a dask.distributed cluster.

Many steps split into pieces that do not depend on each other: one decoder per subject, the reruns
(seeds) of the contrastive decoder, one voxel mask per concept, one clustering per eps value, blocks of
searchlight centres. :func:`map_pieces` runs ``fn(piece, **shared)`` for every piece — in this process
(``scheduler=None``), on a :class:`~distributed.LocalCluster` of worker processes on this machine
(``"local"``, the default), or on any running dask scheduler (``"tcp://host:8786"``) — and returns the
results in the order of the pieces, so a distributed run gives what the serial run gives.

Large inputs that every piece needs (the study, an embedding matrix) go in ``shared``: they are sent to
each worker once, not once per piece. ``fn`` must be importable or picklable by cloudpickle (a
module-level function is safest).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Generator, Iterable
from typing import Any

from .errors import InputError
from .progress import Progress, run_to_end

__all__ = ["connect", "fit_pieces", "map_pieces", "run_pieces"]

SERIAL = ("serial", "none", "")


def _check_scheduler(scheduler: Any) -> None:
    if scheduler is None:
        return
    try:
        from distributed import Client
    except ImportError as err:
        raise InputError("dask.distributed", "is not installed", "pip install 'dask[distributed]'") from err
    if isinstance(scheduler, Client) or isinstance(scheduler, str):
        return
    raise InputError("parameter scheduler", f"{scheduler!r} is not a scheduler",
                     "use None (this process), 'local' (a LocalCluster) or an address such as tcp://host:8786")


def connect(scheduler: Any = "local", n_workers: int | None = None, threads_per_worker: int = 1,
            connect_timeout: float = 5.0, memory_limit: str | float | None = "auto"):
    """A dask ``Client`` for ``scheduler`` and a function that closes what was opened here.

    ``"local"`` starts a :class:`~distributed.LocalCluster` of ``n_workers`` processes (default: one per
    CPU core, at most 8) with ``threads_per_worker`` threads each, listening on the loopback interface
    only; each worker's BLAS/torch thread count is set to ``threads_per_worker`` so that workers do not
    oversubscribe the cores. A string address connects to a running scheduler and fails with
    :class:`InputError` after ``connect_timeout`` seconds when none answers. A ``Client`` is used as is.
    """
    _check_scheduler(scheduler)
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        return scheduler, lambda: None
    if scheduler == "local":
        if n_workers is not None and int(n_workers) < 1:
            raise InputError("parameter n_workers", f"{n_workers!r} is below 1", "use at least one worker")
        if int(threads_per_worker) < 1:
            raise InputError("parameter threads_per_worker", f"{threads_per_worker!r} is below 1",
                             "use at least one thread per worker")
        n = int(n_workers) if n_workers is not None else max(1, min(8, os.cpu_count() or 1))
        threads = str(int(threads_per_worker))
        cluster = LocalCluster(n_workers=n, threads_per_worker=int(threads_per_worker), processes=True,
                               host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                               memory_limit=memory_limit,
                               env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                                    "OPENBLAS_NUM_THREADS": threads})
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise

        def close():
            client.close()
            cluster.close()

        return client, close
    address = str(scheduler).strip()
    try:
        client = Client(address, timeout=f"{float(connect_timeout)}s")
    except (OSError, TimeoutError, ValueError) as err:
        raise InputError("parameter scheduler", f"no dask scheduler answers at {address!r} within "
                         f"{connect_timeout:g} s ({type(err).__name__})",
                         "start one (`dask scheduler` and `dask worker ADDRESS`), check the address and "
                         "firewall, or use scheduler='local'") from err
    return client, client.close


def map_pieces(fn: Callable[..., Any], pieces: Iterable[Any], *, scheduler: Any = "local",
               n_workers: int | None = None, threads_per_worker: int = 1, shared: dict[str, Any] | None = None,
               connect_timeout: float = 5.0, step: str = "pieces", describe: Callable[[Any], str] = str,
               on_done: Callable[[int, Any], None] | None = None) -> Generator[Progress, None, list[Any]]:
    """Run ``fn(piece, **shared)`` for every piece; yields :class:`Progress`, returns results in order.

    Parameters
    ----------
    fn : callable
        Pure function of one piece (and the shared objects); it must not rely on global state that
        differs between processes (seed it from the piece).
    pieces : iterable
        The independent inputs (subject names, seeds, concept indices, eps values, blocks of centres).
    scheduler : None, "local", address or Client
        ``None`` (or ``"serial"``): run here, one piece after the other (the reference).
        ``"local"``: a LocalCluster of worker processes on this machine (default).
        ``"tcp://host:port"``: a running dask scheduler. A ``distributed.Client``: use it.
    n_workers, threads_per_worker : int
        Size of a local cluster (see :func:`connect`).
    shared : dict, optional
        Keyword arguments for every call, sent to each worker once.
    connect_timeout : float
        Seconds to wait for a scheduler at an address before failing.
    step : str
        Name in the progress reports.
    describe : callable
        Short text of a piece for the progress messages.
    on_done : callable, optional
        Called here with ``(index, result)`` as each piece finishes, before the others have (to keep what
        finished should a later piece fail: the decode step's checkpoints).

    Returns
    -------
    list
        ``[fn(p, **shared) for p in pieces]``, in that order. An exception raised by a piece is raised
        here (remaining pieces are cancelled). Closing the generator cancels the pieces still running and
        closes a cluster it started.
    """
    pieces = list(pieces)
    shared = dict(shared or {})
    n = len(pieces)
    if isinstance(scheduler, str) and scheduler.strip().lower() in SERIAL:
        scheduler = None
    _check_scheduler(scheduler)
    if scheduler is None:
        out = []
        yield Progress(step, 0, n, f"{n} pieces in this process")
        for i, piece in enumerate(pieces):
            out.append(fn(piece, **shared))
            if on_done is not None:
                on_done(i, out[-1])
            yield Progress(step, i + 1, n, f"{describe(piece)} done")
        return out

    from distributed import as_completed

    client, close = connect(scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker,
                            connect_timeout=connect_timeout)
    futures = []
    try:
        yield Progress(step, 0, n, f"{n} pieces on {len(client.scheduler_info()['workers'])} dask workers")
        scattered = {k: client.scatter(v, broadcast=True) for k, v in shared.items()}
        # each piece goes to the cluster as data, not inline in its task (a subject's responses are GBs)
        sent = client.scatter(pieces, hash=False) if pieces else []
        token = uuid.uuid4().hex[:8]
        futures = [client.submit(fn, piece, **scattered, pure=False, key=f"{step}-{i}-{token}")
                   for i, piece in enumerate(sent)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * n
        done = 0
        for future in as_completed(futures):
            i = index[future.key]
            results[i] = future.result()          # re-raises the piece's own exception
            if on_done is not None:
                on_done(i, results[i])
            done += 1
            yield Progress(step, done, n, f"{describe(pieces[i])} done")
        return results
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
        close()


def fit_pieces(ctx: Any, step: str, jobs: list[tuple[str, Callable[..., Any], tuple]],
               on_done: Callable[[str, Any], None] | None = None) -> Generator[Progress, None, dict[str, Any]]:
    """Run the fits ``jobs`` (``(name, fn, args)``: ``fn(*args)`` returns a fitted estimator) on the analysis's
    dask scheduler (``ctx.scheduler``, ``ctx.n_workers``); returns ``{name: fn(*args)}``, and gives each to
    ``on_done(name, fitted)`` as it finishes. A step calls it for one fit per subject when a scheduler is set;
    the estimators come seeded, so the results equal a serial run's. ``ctx.scheduler`` may be a ``Client`` (the
    command line connects once per analysis); ``"local"`` starts a LocalCluster for this call alone."""
    done = None if on_done is None else (lambda i, result: on_done(jobs[i][0], result))
    results = yield from map_pieces(_call, jobs, scheduler=ctx.scheduler, n_workers=ctx.n_workers, step=step,
                                    describe=lambda job: job[0], on_done=done)
    return {name: result for (name, _, _), result in zip(jobs, results)}


def _call(job: tuple[str, Callable[..., Any], tuple]) -> Any:
    _, fn, args = job
    return fn(*args)


def run_pieces(fn: Callable[..., Any], pieces: Iterable[Any], progress: Callable[[Progress], None] | None = None,
               **kwargs: Any) -> list[Any]:
    """:func:`map_pieces` run to the end; ``progress`` receives each report."""
    return run_to_end(map_pieces(fn, pieces, **kwargs), progress)
