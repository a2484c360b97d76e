"""Import guards for heavy libraries.

triton (pulled in by transformers when installed with a CUDA build of torch) links its own LLVM. When Mesa's
software OpenGL (llvmpipe, e.g. napari under Xvfb or on a machine without GPU drivers) is already loaded, its
LLVM symbols win and importing triton crashes the process. Loading triton with ``RTLD_DEEPBIND`` makes it bind
to its own copy. :func:`import_transformers` does that before importing transformers.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator


def preload_triton() -> None:
    """Import triton (if installed and not yet imported) so that it binds to its own LLVM."""
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    if not deepbind or not hasattr(sys, "setdlopenflags"):
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | deepbind)
    try:
        importlib.import_module("triton")
    except Exception:  # triton is optional; transformers runs without it on the CPU
        sys.modules.pop("triton", None)
    finally:
        sys.setdlopenflags(flags)


def import_transformers():
    """``import transformers`` safely inside a running napari viewer."""
    preload_triton()
    import transformers

    return transformers


@contextlib.contextmanager
def quiet_model_loading() -> Iterator[None]:
    """No "Loading weights" progress bar from transformers while a local model loads (the step's own progress
    says what is loading); the library's setting is given back afterwards."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()
