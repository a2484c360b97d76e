"""Run core generators in napari workers; the only place widgets start background work.

Layers are only touched from the callbacks, which napari runs on the main thread. Errors from the core reach
the user as one notification carrying the core's message. ``SYNCHRONOUS`` is the seam that lets tests run a
step in the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info

#: when True, steps run in the calling thread (tests that want no event-loop waiting)
SYNCHRONOUS = False


class StepRuntimeError(Exception):
    """A ``RuntimeError`` raised inside a worker's generator, carried out under another type.

    superqt takes a ``RuntimeError`` from a generator for a deleted worker: it only warns and never emits
    ``errored`` or ``finished``, so the widget would wait for ever. torch raises ``RuntimeError`` for many
    bad inputs, so the workers re-raise it as this (the notification shows the original).
    """

    def __init__(self, original: RuntimeError):
        super().__init__(str(original))
        self.original = original


def _error_message(exc: BaseException) -> str:
    from ..core.errors import BrainConceptsError, InputError

    if isinstance(exc, StepRuntimeError):
        exc = exc.original
    if isinstance(exc, InputError):
        return _short_path_first(exc)
    return str(exc) if isinstance(exc, BrainConceptsError) else f"{type(exc).__name__}: {exc}"


def _short_path_first(exc) -> str:
    """An error about a file or folder given by its absolute path, as ``PARENT/NAME: PROBLEM. Fix: HOW.
    (Full path: PATH)``: napari's notification shows one line until it is expanded, which was only a piece of
    the path. Errors about anything else (a parameter, a participant, a path within a phrase) read as
    raised."""
    path = exc.path
    if path is None or not path.is_absolute() or len(path.parts) < 4:
        return str(exc)
    return f"{path.parent.name}/{path.name}: {exc.problem}. Fix: {exc.fix}. (Full path: {exc.where})"


def notify_error(exc: BaseException) -> None:
    show_error(_error_message(exc))


def start(function: Callable[..., Any], *args: Any, on_yield: Callable | None = None,
          on_return: Callable | None = None, on_error: Callable | None = None,
          on_finish: Callable | None = None, progress: dict | None = None, **kwargs: Any):
    """Start ``function(*args, **kwargs)`` (a generator function or a plain one) in a napari worker.

    Returns the worker (``worker.quit()`` stops a generator at its next yield). With ``SYNCHRONOUS`` the
    function runs here and ``None`` is returned after the callbacks ran.
    """
    from ..core.compat import preload_triton

    preload_triton()  # before any step imports transformers/open_clip beside napari's OpenGL
    if SYNCHRONOUS:
        return _run_here(function, args, kwargs, on_yield, on_return, on_error, on_finish)
    import inspect

    if inspect.isgeneratorfunction(function):
        gen = function(*args, **kwargs)

        def iterate():
            try:
                return (yield from gen)
            except RuntimeError as err:
                raise StepRuntimeError(err) from err

        # errors go to ``on_error`` alone: without _ignore_errors superqt also re-raises them in the event
        # loop, where napari shows the same error a second time
        worker = create_worker(iterate, _progress=progress, _ignore_errors=True)
    else:
        gen = None
        worker = create_worker(function, *args, _progress=progress, _ignore_errors=True, **kwargs)
    if on_yield is not None and isinstance(worker, GeneratorWorker):
        worker.yielded.connect(on_yield)
    if on_return is not None:
        worker.returned.connect(on_return)
    worker.errored.connect(on_error or notify_error)
    if gen is not None:
        # a cancelled step stops at a yield; closing it runs its clean-up (the staged results are dropped)
        worker.finished.connect(lambda: gen.close() if worker.abort_requested else None)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    worker.start()
    return worker


def _run_here(function, args, kwargs, on_yield, on_return, on_error, on_finish):
    import inspect

    try:
        result = function(*args, **kwargs)
        if inspect.isgenerator(result):
            gen = result
            while True:
                try:
                    item = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                if on_yield is not None:
                    on_yield(item)
        if on_return is not None:
            on_return(result)
    except Exception as exc:  # every error becomes one notification
        (on_error or notify_error)(exc)
    finally:
        if on_finish is not None:
            on_finish()
    return None


__all__ = ["SYNCHRONOUS", "notify_error", "show_info", "start"]
