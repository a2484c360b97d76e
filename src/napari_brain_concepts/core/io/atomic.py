"""Atomic file writes: write to a temporary name in the same folder, then rename over the target."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import InputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename.

    The caller (writer) creates the file at the temporary path.
    On any error the temporary file is removed and ``target`` keeps its earlier content. The
    temporary name keeps the target's suffixes (e.g. ``.nii.gz``) so writers that look at the
    extension behave as for the target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    # not tempfile.mkstemp: it creates the file with mode 0600, and the rename would carry that mode to
    # the target; the writer creating the file itself gives the usual permissions (umask)
    tmp_path = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}{suffix}"
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, target)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(target, "the disk is full; nothing was written",
                             "free space or choose another output folder") from err
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write_atomic(target: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    return write_atomic(target, lambda p: p.write_text(text, encoding="utf-8"))
