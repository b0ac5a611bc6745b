"""Where the shipped option files are: inside the installed package, or beside it in a source checkout.

Why: a wheel cannot hold the repository's top-level ``options/`` folder, so the build copies it into the package
(``ssl_plugin/options/``, the MMagic configs in ``options/mmagic_configs/``: nothing inside the package is named after
a host). Code and users name a file as in the repository (``ssl_basicvsr_demo.yml``, ``mmagic/ssl_basicvsr_demo.py``,
with or without a leading ``options/``) and get the copy that exists, from any working directory.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
INSTALLED = PACKAGE / 'options'                 # a wheel install: copied there by setup.py's build step
CHECKOUT = PACKAGE.parent / 'options'           # a source checkout (or an editable install)
#: The MMagic configs' folder in a checkout, and in the installed package.
MM_CHECKOUT, MM_INSTALLED = 'mmagic', 'mmagic_configs'


def in_checkout() -> bool:
    """True when this package runs from a source checkout (the repository's ``options/`` beside it)."""
    return CHECKOUT.is_dir() and not INSTALLED.is_dir()


def _roots() -> tuple[Path, str] | None:
    if INSTALLED.is_dir():
        return INSTALLED, MM_INSTALLED
    if CHECKOUT.is_dir():
        return CHECKOUT, MM_CHECKOUT
    return None


def find_option_file(name: str) -> Path | None:
    """The shipped file called ``name`` (``x.yml``, ``mmagic/x.py``, ``options/...``), or None."""
    roots = _roots()
    if roots is None:
        return None
    root, mm = roots
    parts = Path(name).parts
    if parts and parts[0] == 'options':
        parts = parts[1:]
    if not parts:
        return None
    if parts[0] in (MM_CHECKOUT, MM_INSTALLED):
        parts = (mm, *parts[1:])
    path = root.joinpath(*parts)
    return path if path.is_file() else None


def option_files() -> dict[str, Path]:
    """Every shipped option file by its repository name (``x.yml``, ``mmagic/x.py``)."""
    roots = _roots()
    if roots is None:
        return {}
    root, mm = roots
    files = {p.name: p for p in sorted(root.glob('*.yml'))}
    files.update({f'{MM_CHECKOUT}/{p.name}': p for p in sorted((root / mm).glob('*.py'))})
    return files
