"""Console entry points (``pip install`` puts them on PATH): each runs a tool's ``main`` and exits 0 when it returns
(the tools' ``main`` return their results to Python callers, which a console script would print as an error)."""
from __future__ import annotations

import importlib


def _run(module: str) -> int:
    importlib.import_module(module).main()
    return 0


def export() -> int:
    return _run('ssl_plugin.tools.export')


def upscale() -> int:
    return _run('ssl_plugin.tools.upscale')


def options() -> int:
    return _run('ssl_plugin.tools.options')


def demo() -> int:
    return _run('ssl_plugin.demo')


def train() -> int:
    return _run('ssl_plugin.train')


def test() -> int:
    return _run('ssl_plugin.test')


def clips() -> int:
    return _run('ssl_plugin.tools.clips')


def make_dataset() -> int:
    return _run('ssl_plugin.tools.make_dataset')
