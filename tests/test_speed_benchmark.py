"""benchmarks/speed.py runs end to end on a tiny BasicVSR (a smoke test of the script, not a timing)."""
from __future__ import annotations

import json
import os
import signal
import statistics

import pytest
import torch
from script_module import load_script

import ssl_plugin  # noqa: F401  (host compatibility shims)
from ssl_plugin.core import RSCBlock, count_macs

TINY = ['--size', '40', '40', '--frames', '2', '--num-feat', '8', '--num-block', '1', '--ratios', '0.5',
        '--repeats', '2', '--warmup', '0', '--threads', '1']


@pytest.fixture(scope='module')
def speed():
    return load_script('benchmarks/speed.py', 'speed_benchmark')


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


# -- inference modes on one device (--device) -----------------------------------------------------------------------

MODES_TINY = ['--device', 'cpu', '--size', '40', '40', '--frames', '2', '--num-feat', '8', '--num-block', '1',
              '--ratios', '0.5', '--repeats', '2', '--warmup', '0', '--threads', '1']
ROW_KEYS = {'device', 'size', 'ratio', 'mode', 'ms_per_frame', 'speedup', 'speedup_vs_dense_eager',
            'dense_ms_per_frame', 'times_s', 'times_dense_s', 'max_rel_error', 'matches_eager', 'exact',
            'chosen_mode', 'mac_ratio'}


def test_mode_rows_are_measurements_and_unavailable_modes_are_skipped(speed, tmp_path, capsys, keep_threads):
    out = tmp_path / 'modes.json'
    report = speed.main(MODES_TINY + ['--modes', 'channels_last+fold', 'eager', 'graph', '--json', str(out)])
    rows = report['rows']
    assert [(r['mode'], r['ratio']) for r in rows] == [('channels_last+fold', 0.5), ('eager', 0.5)]
    dense_eager_ms = rows[1]['dense_ms_per_frame']  # also for the row timed before eager
    assert rows[1]['speedup_vs_dense_eager'] == rows[1]['speedup']
    for r in rows:
        assert ROW_KEYS <= r.keys() and r['device'] == 'cpu' and r['size'] == [40, 40]
        assert r['chosen_mode'] == r['mode'] and r['exact'] and r['matches_eager'] and r['max_rel_error'] <= 1e-4
        assert len(r['times_s']) == len(r['times_dense_s']) == 2 and min(r['times_s'] + r['times_dense_s']) > 0
        assert r['ms_per_frame'] == pytest.approx(1e3 * statistics.median(r['times_s']) / 2)
        assert r['dense_ms_per_frame'] == pytest.approx(1e3 * statistics.median(r['times_dense_s']) / 2)
        assert r['speedup'] == pytest.approx(r['dense_ms_per_frame'] / r['ms_per_frame'])
        assert r['speedup_vs_dense_eager'] == pytest.approx(dense_eager_ms / r['ms_per_frame'])
        assert r['macs_dense'] > r['macs_pruned'] > 0
    assert rows[0]['times_s'] != rows[1]['times_s']  # each mode timed on its own
    [skip] = report['skipped']
    assert skip['mode'] == 'graph' and skip['ratios'] == [0.5] and 'CUDA' in skip['reason']
    saved = json.loads(out.read_text())
    assert saved['rows'] == rows and saved['skipped'] == report['skipped'] and saved['complete']
    assert saved['env']['device'] == 'cpu' and saved['config']['modes'] == ['channels_last+fold', 'eager', 'graph']
    targets = saved['targets']
    best = min(rows, key=lambda r: r['ms_per_frame'])
    assert targets['evaluated'] and targets['same_mode']['best_mode'] == best['mode']
    assert targets['same_mode']['speedup_per_mode'] == {r['mode']: r['speedup'] for r in rows}
    assert targets['vs_dense_eager']['speedup_vs_dense_eager'] == best['speedup_vs_dense_eager']
    assert targets['vs_dense_eager']['met'] == (best['speedup_vs_dense_eager'] >= 3.0)
    printed = capsys.readouterr().out
    assert 'target 1' in printed and 'target 2' in printed and 'skipped graph' in printed


def test_a_stopped_run_keeps_what_it_measured(speed, tmp_path, monkeypatch, keep_threads):
    """SIGTERM during the second group, while preparing a mode, and the exception it raises turned into another one on
    its way out (as a CUDA graph capture's exit would): the first group's row stays, the rest is listed as skipped."""
    out, calls, real = tmp_path / 'partial.json', [], speed.prepare

    def terminated_in_second_group(net, x, mode, args):
        calls.append(mode)
        if mode == 'channels_last':
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except KeyboardInterrupt:
                raise RuntimeError('capture ended badly') from None
        return real(net, x, mode, args)

    monkeypatch.setattr(speed, 'prepare', terminated_in_second_group)
    speed.main(MODES_TINY + ['--modes', 'eager', 'channels_last', 'fold', '--json', str(out)])
    assert calls == ['eager', 'eager', 'channels_last']  # dense and pruned in eager, then dense in channels_last
    saved = json.loads(out.read_text())
    assert not saved['complete'] and [r['mode'] for r in saved['rows']] == ['eager']
    assert [(s['mode'], s['ratios']) for s in saved['skipped']] == [('channels_last', [0.5]), ('fold', [0.5])]
    assert all(s['reason'] == 'interrupted (signal 15) before it finished' for s in saved['skipped'])
    assert signal.getsignal(signal.SIGTERM) is not None and speed.STOP['reason'] == 'signal 15'


def test_an_exhausted_budget_skips_every_group(speed, keep_threads):
    report = speed.main(MODES_TINY + ['--modes', 'eager', 'fold', '--budget-s', '0'])
    assert report['rows'] == [] and not report['targets']['evaluated']
    assert [s['mode'] for s in report['skipped']] == ['eager', 'fold']
    assert all(s['reason'].startswith('time budget') for s in report['skipped'])


def test_groups_run_the_target_ratio_first_and_compile_last(speed):
    groups = speed.plan_groups(['eager', 'fold+compile', 'auto'], [0.3, 0.5, 0.7])
    assert groups == [('eager', [0.5]), ('auto', [0.5]), ('eager', [0.3, 0.7]), ('auto', [0.3, 0.7]),
                      ('fold+compile', [0.5]), ('fold+compile', [0.3, 0.7])]


def test_bad_mode_options_are_refused(speed):
    for argv in (['--device', 'cpu', '--modes', 'channel_last'], ['--modes', 'eager'],
                 ['--device', 'cpu', '--devices', 'cpu'], ['--device', 'cpu', '--modes', 'fold', 'fold']):
        with pytest.raises(SystemExit):
            speed.parse_args(argv)


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
