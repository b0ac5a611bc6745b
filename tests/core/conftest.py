"""Fixtures of the engine tests. Pruned example networks are cached for the session: every forward of a host network
runs SPyNet, so the surgery and spec tests share them instead of rebuilding."""
from __future__ import annotations

import pytest
from engine_helpers import make_case


@pytest.fixture(scope='session')
def pruned_case():
    cache = {}

    def get(arch: str, feat: int, blocks: int, ratio: float, scope: str = 'global', align: int = 1):
        key = (arch, feat, blocks, ratio, scope, align)
        if key not in cache:
            cache[key] = make_case(*key)
        return cache[key]

    return get
