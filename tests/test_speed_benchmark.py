"""benchmarks/speed.py runs end to end on a tiny BasicVSR (a smoke test of the script, not a timing)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import ssl_plugin  # noqa: F401  (host compatibility shims)
from ssl_plugin.core import RSCBlock, count_macs

SPEED = Path(__file__).resolve().parents[1] / 'benchmarks' / 'speed.py'
TINY = ['--size', '40', '40', '--frames', '2', '--num-feat', '8', '--num-block', '1', '--ratios', '0.5',
        '--repeats', '2', '--warmup', '0', '--threads', '1']


@pytest.fixture(scope='module')
def speed():
    spec = importlib.util.spec_from_file_location('speed_benchmark', SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def keep_threads():
    """speed.main sets torch's thread count for the whole process; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_rows_for_each_layout_with_per_round_times(speed, tmp_path, capsys, keep_threads):
    out = tmp_path / 'speed.json'
    rows = speed.main(TINY + ['--breakdown', '--json', str(out)])
    assert torch.get_num_threads() == 1  # --threads was applied
    assert [r['layout'] for r in rows] == ['nchw', 'channels_last']
    for r in rows:
        assert r['macs_dense'] > r['macs_pruned'] > 0 and r['mac_ratio'] == r['macs_dense'] / r['macs_pruned']
        assert len(r['times_dense_s']) == len(r['times_pruned_s']) == 2
        assert r['best_dense_s'] == min(r['times_dense_s']) <= r['time_dense_s']
        assert r['speedup'] == r['best_dense_s'] / r['best_pruned_s']
        assert r['speedup_per_mac_ratio'] == pytest.approx(r['speedup'] / r['mac_ratio'])
        rounds = sorted(d / q for d, q in zip(r['times_dense_s'], r['times_pruned_s']))
        assert r['speedup_median_round'] == pytest.approx((rounds[0] + rounds[1]) / 2)
        assert len(r['steal_dense_s']) == len(r['steal_pruned_s']) == 2
        assert all(s is None or s >= 0 for s in r['steal_dense_s'] + r['steal_pruned_s'])
    saved = json.loads(out.read_text())
    assert saved['rows'] == rows and saved['config']['layouts'] == ['nchw', 'channels_last']
    assert set(saved['code']) == {'commit', 'uncommitted_changes'}
    printed = capsys.readouterr().out
    assert 'per part' in printed and 'backward_trunk' in printed and 'spynet' in printed


def test_part_macs_add_up_to_the_whole_network(speed):
    args = speed.parse_args(TINY)
    dense = speed.build_dense(args)
    pruned = speed.pruned_copy(dense, 0.5, args)
    assert any(isinstance(m, RSCBlock) for m in pruned.modules())
    x = torch.rand(1, 2, 3, 40, 40)
    for net in (dense, pruned):
        parts = speed.part_macs(net, x)
        assert parts['spynet'] > 0 and parts['forward_trunk'] > 0
        assert sum(parts.values()) == count_macs(net, x)
    assert speed.part_macs(dense, x)['spynet'] == speed.part_macs(pruned, x)['spynet']  # never pruned


def test_bad_ratios_are_refused(speed):
    with pytest.raises(SystemExit):
        speed.parse_args(['--ratios', '1.0'])


def test_basicvsrpp_is_measured_with_its_alignment_and_parts_add_up(speed):
    """--arch basicvsrpp builds BasicSR's BasicVSR++ with its deformable alignment also without CUDA; the alignment
    (never pruned) and the ModuleDict parts (backbones, alignment) are counted and keep their MACs."""
    args = speed.parse_args(['--arch', 'basicvsrpp', '--num-feat', '8', '--num-block', '1'])
    assert args.num_block == 1 and speed.parse_args(['--arch', 'basicvsrpp']).num_block == 7
    dense = speed.build_dense(args)
    assert type(dense).__name__ == 'BasicVSRPlusPlus' and len(dense.deform_align) == 4
    pruned = speed.pruned_copy(dense, 0.5, args)
    x = torch.rand(1, 2, 3, 64, 64)  # BasicVSR++ asserts LR frames of at least 64 px
    dense_parts, pruned_parts = speed.part_macs(dense, x), speed.part_macs(pruned, x)
    assert sum(dense_parts.values()) == count_macs(dense, x)
    assert dense_parts['deform_align'] == pruned_parts['deform_align'] > 0   # the DCN MACs are counted
    assert dense_parts['backbone'] > pruned_parts['backbone'] > 0
