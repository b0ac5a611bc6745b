"""Atomic file writes that leave the permissions an ordinary ``open`` / ``torch.save`` would.

Why: writing to a temporary file in the target folder and renaming it means a crash never leaves a torn checkpoint,
but ``tempfile.mkstemp`` creates that file 0600; renamed, a checkpoint would be unreadable to the rest of a team on a
shared server. The temporary file therefore gets ``0o666 & ~umask`` before the rename, as ``open(path, 'w')`` does.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable

import torch

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask. Read from ``/proc/self/status`` where the kernel reports it (nothing changes); elsewhere by
    setting and at once restoring it (``os.umask`` has no read-only form), under a lock."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable, binary: bool = True) -> None:
    """``write(file)`` into a temporary file beside ``path``, synced, given ordinary permissions, then renamed onto
    ``path``: readers see the old file or the complete new one, never half of it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb' if binary else 'w') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``Path(path).write_text(text)``, atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text), binary=False)
