"""Atomic writes (checkpoints, benchmark results) get the permissions an ordinary write gets under the user's umask,
so a team on a shared server can read each other's checkpoints; a failed write leaves the old file alone."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from script_module import load_script

from ssl_plugin.basicsr_plugin.checkpoint import atomic_torch_save
from ssl_plugin.core.io import atomic_save, atomic_write_text, current_umask


def _bench_write_atomic(path, text):
    load_script('benchmarks/benchmark_env.py', 'benchmark_env_under_test').write_atomic(Path(path), text)


WRITERS = {
    'atomic_save': lambda p: atomic_save({'w': torch.ones(2)}, p),
    'atomic_torch_save': lambda p: atomic_torch_save({'w': torch.ones(2)}, str(p)),
    'atomic_write_text': lambda p: atomic_write_text(p, 'x\n'),
    'benchmark_env.write_atomic': lambda p: _bench_write_atomic(p, 'x\n'),
}


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=['umask022', 'umask077', 'umask002'])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.parametrize('writer', list(WRITERS))
def test_atomic_writes_get_the_mode_of_an_ordinary_write(tmp_path, umask, writer):
    assert current_umask() == umask
    ordinary = tmp_path / 'ordinary'
    torch.save({'w': torch.ones(2)}, ordinary)
    target = tmp_path / 'sub' / 'ckpt.pth'
    WRITERS[writer](target)
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ['ckpt.pth']  # no temporary file left behind


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / 'ckpt.pth'
    atomic_save({'w': torch.zeros(1)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('cannot pickle')

    with pytest.raises(RuntimeError, match='cannot pickle'):
        atomic_save({'w': Unpicklable()}, target)
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.zeros(1))
    assert [p.name for p in tmp_path.iterdir()] == ['ckpt.pth']
