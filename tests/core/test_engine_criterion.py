"""Criterion: L1 scores and the choice of S (global / local, ceil(p*N), ties, at least one kept, align, skip)."""
from __future__ import annotations

import math

import pytest
import torch
from engine_helpers import DTYPE, ToyUniVSR, build

from ssl_plugin.core import describe, kept_indices, l1_scores, select_unimportant


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def as_lists(pruned):
    return {k: v.tolist() for k, v in pruned.items()}


SCORES = {'a': t(0.1, 0.5, 0.9), 'b': t(0.2, 0.3, 0.8, 0.05)}


def test_global_pools_every_score():
    # N = 7, ceil(0.4 * 7) = 3 smallest overall: b[3] = 0.05, a[0] = 0.1, b[0] = 0.2.
    assert as_lists(select_unimportant(SCORES, 0.4, 'global')) == {'a': [0], 'b': [0, 3]}


def test_local_takes_ceil_p_n_per_key():
    # ceil(0.4 * 3) = 2 of a, ceil(0.4 * 4) = 2 of b.
    assert as_lists(select_unimportant(SCORES, 0.4, 'local')) == {'a': [0, 1], 'b': [0, 3]}


@pytest.mark.parametrize('n,ratio', [(10, 0.3), (10, 0.7), (100, 0.29), (64, 0.5), (30, 0.1), (7, 0.01)])
def test_count_is_ceil_p_n_despite_float_rounding(n, ratio):
    scores = {'k': torch.arange(n, dtype=torch.float64).flip(0)}
    expected = math.ceil(round(ratio * n, 9))  # 0.3 * 10 == 3.0000000000000004 in floats: still 3
    for scope in ('global', 'local'):
        pruned = select_unimportant(scores, ratio, scope)['k']
        assert pruned.numel() == expected
        assert pruned.tolist() == list(range(n - expected, n))  # the smallest scores sit at the end
        assert pruned.dtype == torch.int64


def test_global_count_spans_keys():
    scores = {f'k{i}': torch.rand(10, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
              for i in range(4)}
    pruned = select_unimportant(scores, 0.35, 'global')
    assert sum(v.numel() for v in pruned.values()) == 14
    # Every pruned score is <= every kept score.
    flat_pruned = torch.cat([scores[k][v] for k, v in pruned.items()])
    flat_kept = torch.cat([scores[k][kept_indices(10, v)] for k, v in pruned.items()])
    assert flat_pruned.max() <= flat_kept.min()


def test_ties_are_broken_by_position_deterministically():
    scores = {'a': t(1, 1, 1, 1), 'b': t(1, 1, 1, 1)}
    first = as_lists(select_unimportant(scores, 0.5, 'global'))
    # ceil(0.5 * 8) = 4 taken in key order; a must keep one, so its last index is passed over and b's first taken.
    assert first == {'a': [0, 1, 2], 'b': [0]}
    for _ in range(3):
        assert as_lists(select_unimportant(scores, 0.5, 'global')) == first
    assert as_lists(select_unimportant(scores, 0.5, 'local')) == {'a': [0, 1], 'b': [0, 1]}


def test_at_least_one_unit_kept_per_key():
    scores = {'small': t(0, 0, 0), 'big': t(5, 6, 7, 8, 9)}
    pruned = select_unimportant(scores, 0.5, 'global')
    # All three of small are among the 4 smallest; its last is passed over and the next smallest (big's 6) taken,
    # so still ceil(0.5 * 8) = 4 units go.
    assert pruned['small'].tolist() == [0, 1]
    assert pruned['big'].tolist() == [0, 1]
    pruned = select_unimportant({'one': t(3.0)}, 0.9, 'local')
    assert pruned['one'].numel() == 0


def test_given_back_units_are_the_highest_scoring():
    scores = {'k': t(0.5, 0.1, 0.4, 0.2, 0.3, 0.9, 0.8, 0.7, 0.6, 1.0)}
    # local 0.6 of 10 marks 6 (0.1..0.6); align 8 keeps 8, so only the 2 smallest stay pruned.
    assert select_unimportant(scores, 0.6, 'local', align=8)['k'].tolist() == [1, 3]


@pytest.mark.parametrize('n', [16, 10, 24, 64, 7])
@pytest.mark.parametrize('ratio', [0.1, 0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize('align', [2, 4, 8])
def test_align_rounds_kept_counts_up(n, ratio, align):
    scores = {'k': torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))}
    plain = select_unimportant(scores, ratio, 'local')['k']
    aligned = select_unimportant(scores, ratio, 'local', align=align)['k']
    kept = n - aligned.numel()
    assert kept % align == 0 or kept == n
    assert kept >= n - plain.numel() and kept - (n - plain.numel()) < align
    assert set(aligned.tolist()) <= set(plain.tolist())


@pytest.mark.parametrize('ratio', [0, 1, -0.1, 1.5, float('nan')])
def test_ratio_outside_open_interval_is_refused(ratio):
    with pytest.raises(ValueError, match='pruning ratio'):
        select_unimportant(SCORES, ratio)


def test_scope_align_and_empty_inputs_are_validated():
    with pytest.raises(ValueError, match='scope'):
        select_unimportant(SCORES, 0.5, 'layer')
    for align in (0, -8, 1.5):
        with pytest.raises(ValueError, match='align'):
            select_unimportant(SCORES, 0.5, 'global', align)
    with pytest.raises(ValueError, match='no prunable units'):
        select_unimportant({}, 0.5)


def test_l1_scores_per_unit_kind():
    net = ToyUniVSR(num_feat=4, num_block=1, scale=2, hr_feat=3).to(DTYPE)
    topo = describe(net)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(p.numel())))
    mean = l1_scores(net, topo)
    total = l1_scores(net, topo, normalize=False)
    c1 = net.trunk.main[2][0].conv1.weight
    assert torch.allclose(mean['trunk.main.2.0.conv1'], c1.abs().mean((1, 2, 3)))
    assert torch.allclose(mean['trunk.main.2.0.conv1@in'], c1.abs().mean((0, 2, 3)))
    up = net.upconv.weight  # 3 groups of 4 consecutive filters
    assert torch.allclose(total['upconv'], up.abs().reshape(3, -1).sum(1))
    assert torch.allclose(mean['upconv'], up.abs().reshape(3, -1).mean(1))
    assert mean['fusion'].shape == (4,) and all(v.dtype == torch.float64 for v in mean.values())
    assert list(l1_scores(net, topo, keys=['fusion'])) == ['fusion']


def test_skip_patterns_match_keys_and_unit_paths():
    topo = describe(build('BasicVSR', 8, 2))
    conv2 = topo.skipped_keys(['*.conv2'])
    assert conv2 == {k for k in topo.keys() if k.endswith('.conv2')} and len(conv2) == 4
    assert topo.skipped_keys(['*@in']) == {k for k in topo.keys() if k.endswith('@in')}
    block = topo.skipped_keys(['forward_trunk.main.2.1'])
    assert block == set(topo.unit('forward_trunk.main.2.1').keys)
    assert topo.skipped_keys(['upconv*', 'fusion']) == {'upconv1', 'upconv2', 'fusion'}
    assert topo.skipped_keys([]) == set()


def test_a_skip_pattern_matching_nothing_is_an_error():
    topo = describe(build('BasicVSR', 8, 1))
    with pytest.raises(ValueError, match="'spynet\\*'.*matches no prunable unit"):
        topo.skipped_keys(['upconv1', 'spynet*'])


def test_kept_indices_is_the_sorted_complement():
    assert kept_indices(6, torch.tensor([4, 1])).tolist() == [0, 2, 3, 5]
    assert kept_indices(3, torch.empty(0, dtype=torch.int64)).tolist() == [0, 1, 2]


@pytest.mark.parametrize('seed', range(6))
def test_global_marks_ceil_p_n_and_passes_over_last_units(seed):
    """With small layers that the pool would empty, global selection still marks ceil(p*N) units (when the
    one-kept rule allows) and they are the smallest possible: no kept unit of a key that keeps two or more scores
    below a marked unit."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 7, (5,), generator=g).tolist()
    # The first key's scores are tiny: the pool would take all of them.
    scores = {f'k{i}': torch.rand(n, generator=g, dtype=torch.float64) + (0 if i else -10)
              for i, n in enumerate(sizes)}
    ratio = float(torch.rand(1, generator=g)) * 0.8 + 0.1
    pruned = select_unimportant(scores, ratio, 'global')
    total = sum(sizes)
    assert sum(v.numel() for v in pruned.values()) == min(math.ceil(round(ratio * total, 9)), total - len(sizes))
    marked = torch.cat([scores[k][v] for k, v in pruned.items()])
    for k, v in pruned.items():
        kept = kept_indices(scores[k].numel(), v)
        assert kept.numel() >= 1
        if kept.numel() >= 2 and marked.numel():
            assert scores[k][kept].min() >= marked.max()
