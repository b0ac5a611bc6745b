"""What every benchmark records beside its numbers, so a result can be traced to the code that produced it."""
from __future__ import annotations

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
