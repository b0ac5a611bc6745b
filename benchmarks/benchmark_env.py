"""What every benchmark records beside its numbers, so a result can be traced to the code that produced it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def code_version() -> dict:
    """The commit the product's code came from, and whether its files differed from it."""
    def git(*cmd):
        try:
            return subprocess.run(['git', *cmd], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ''
    changed = git('status', '--porcelain', '--', 'ssl_plugin', 'benchmarks')
    return {'commit': git('rev-parse', 'HEAD') or None, 'uncommitted_changes': changed.splitlines() if changed else []}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (a crash never leaves half a result),
    with the permissions an ordinary write would give it under the user's umask."""
    from ssl_plugin.core.io import atomic_write_text
    atomic_write_text(path, text)


def steal_seconds() -> float | None:
    """CPU time the hypervisor gave to other guests since boot, summed over this machine's CPUs (Linux ``/proc/stat``
    'steal'); None where the kernel does not report it. On a shared virtual machine a timed run that overlaps steal was
    slowed by a neighbour, not by the code."""
    try:
        with open('/proc/stat') as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None
