"""Cost: parameters and MACs counted by torch's FLOP counter."""
from __future__ import annotations

import pytest
import torch
from engine_helpers import DTYPE, build, clip
from torch import nn

from ssl_plugin.core import cost_summary, count_macs, count_params, describe, l1_scores, prune, select_unimportant


@pytest.mark.parametrize('cin,cout,k,stride,pad,bias,hw', [
    (3, 8, 3, 1, 1, True, (10, 12)),
    (16, 4, 1, 1, 0, False, (7, 7)),
    (5, 6, 5, 2, 2, True, (11, 9)),
])
def test_macs_of_one_conv_are_analytic(cin, cout, k, stride, pad, bias, hw):
    conv = nn.Conv2d(cin, cout, k, stride, pad, bias=bias)
    h, w = hw
    x = torch.rand(2, cin, h, w)
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    assert count_macs(conv, x) == 2 * cout * ho * wo * cin * k * k
    assert count_params(conv) == cout * cin * k * k + (cout if bias else 0)


def test_count_macs_restores_training_mode_and_counts_through_wrappers():
    conv = nn.Conv2d(2, 2, 1).train()
    x = torch.rand(1, 2, 3, 3)
    assert count_macs(nn.DataParallel(conv), x) == 2 * 2 * 9
    assert conv.training
    assert count_params(nn.DataParallel(conv)) == 6


def test_dense_costs_more_than_pruned():
    dense = build('BasicVSRUni', 16, 2)
    pruned = build('BasicVSRUni', 16, 2)
    topo = describe(pruned)
    spec = prune(pruned, select_unimportant(l1_scores(pruned, topo), 0.5, 'local'), topo)
    x = clip('BasicVSRUni', n=1, dtype=DTYPE)  # one frame: no flow, the trunk and reconstruction only
    s = cost_summary(dense, pruned, x)
    assert s['params_dense'] == count_params(dense) > s['params_pruned'] == count_params(pruned)
    assert s['macs_dense'] > s['macs_pruned'] > 0
    assert s['mac_ratio'] == pytest.approx(s['macs_dense'] / s['macs_pruned'])
    assert s['param_ratio'] == pytest.approx(s['params_dense'] / s['params_pruned'])
    # Only the trunk's residual convs and the reconstruction shrink: check the trunk's share against the spec.
    h, w = x.shape[-2:]
    removed = 0
    for path, entry in spec['units'].items():
        if entry['kind'] == 'residual':
            full, (n_in, n_mid, n_out) = entry['total']['in'], (len(entry[f]) for f in ('in', 'mid', 'out'))
            removed += 9 * h * w * (full * full * 2 - n_in * n_mid - n_mid * n_out)
    trunk_only = build('BasicVSRUni', 16, 2)
    apply = {k: v for k, v in select_unimportant(l1_scores(trunk_only, topo), 0.5, 'local').items() if '.main.' in k}
    prune(trunk_only, apply, topo)
    assert s['macs_dense'] - count_macs(trunk_only, x) == removed
