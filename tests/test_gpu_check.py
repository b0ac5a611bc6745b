"""benchmarks/gpu_check.sh runs its whole path on CPU (tiny sizes) and fails clearly where CUDA is missing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / 'benchmarks' / 'gpu_check.sh'


def run_check(out: Path, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OUT': str(out), 'GPU_CHECK_PYTHON': sys.executable, 'GPU_CHECK_INSTALL': 'never',
           'OMP_NUM_THREADS': '1', **env}
    return subprocess.run(['bash', str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)


def test_cpu_rehearsal_writes_every_file(tmp_path):
    done = run_check(tmp_path, GPU_CHECK_DEVICE='cpu')
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in tmp_path.iterdir()} == {'gpu_check.log', 'env.txt', 'nvidia-smi.txt', 'speed_cpu.log',
                                                     'speed_cpu.json', 'summary.txt'}
    report = json.loads((tmp_path / 'speed_cpu.json').read_text())
    assert report['complete'] and report['config']['device'] == 'cpu'
    assert [(r['mode'], r['ratio']) for r in report['rows']] == [('eager', 0.5), ('channels_last+fold', 0.5)]
    assert [s['mode'] for s in report['skipped']] == ['graph'] and report['targets']['evaluated']
    assert 'basicsr 1.4.2' in (tmp_path / 'env.txt').read_text()
    summary = (tmp_path / 'summary.txt').read_text()
    assert '2 rows, 1 skipped, complete: True' in summary and 'target 2' in summary
    assert 'gpu_check done' in (tmp_path / 'gpu_check.log').read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_missing_cuda_stops_at_the_preflight(tmp_path):
    done = run_check(tmp_path, GPU_CHECK_DEVICE='cuda')
    assert done.returncode == 1
    assert 'GPU CHECK FAILED: preflight' in done.stdout
    assert 'torch.cuda.is_available() is False' in (tmp_path / 'env.txt').read_text()
    assert not (tmp_path / 'speed_cuda.json').exists()
