"""Selection that survives the hosts' initialisation: normalised global pool, per-layer cap, budget targets (bisection
to within 2 %, unreachable targets), the cost model against torch's FLOP counter, and the selection report."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from engine_helpers import build

from ssl_plugin.core import count_macs, count_params, describe, l1_scores, prune, select_unimportant
from ssl_plugin.core.algorithm import SSLConfig, SSLController
from ssl_plugin.core.criterion import max_pruned
from ssl_plugin.core.selection import (
    BUDGET_TOLERANCE,
    RECONSTRUCTION,
    CostModel,
    example_clip,
    find_ratio,
    format_report,
    selection_report,
)
from ssl_plugin.core.topology import ResidualUnit

SIZE = (2, 36, 36)  # LR frames, H, W


@pytest.fixture(scope='module')
def host_init():
    """BasicSR's BasicVSR as BasicSR builds it: residual convs initialised 10x smaller than the reconstruction's."""
    net = build('BasicVSR', feat=16, blocks=2, dtype=torch.float32)
    topology = describe(net)
    return net, topology, l1_scores(net, topology), CostModel.measure(net, topology, example_clip(net, topology, SIZE))


def _residual_keys(topology):
    return {k for u in topology.units if isinstance(u, ResidualUnit) for k in u.keys}


def _pruned_counts(pruned, keys):
    return sum(pruned[k].numel() for k in keys)


def test_normalised_pool_prunes_residual_and_reconstruction_units_where_the_raw_pool_does_not(host_init):
    net, topology, scores, _ = host_init
    residual = _residual_keys(topology)
    recon = set(topology.keys()) - residual
    raw = select_unimportant(scores, 0.5, 'global')
    norm = select_unimportant(scores, 0.5, 'global_normalized')
    # The raw pool (the paper, literally) takes residual units only: their scores are 10x smaller.
    assert _pruned_counts(raw, recon) == 0 and _pruned_counts(raw, residual) > 0
    assert _pruned_counts(norm, recon) > 0 and _pruned_counts(norm, residual) > 0
    n = sum(v.numel() for v in scores.values())
    assert sum(v.numel() for v in norm.values()) == math.ceil(0.5 * n)
    # Inside a layer the normalised pool still cuts the smallest scores.
    for k, idx in norm.items():
        kept = torch.ones(scores[k].numel(), dtype=torch.bool)
        kept[idx] = False
        if idx.numel() and kept.any():
            assert scores[k][idx].max() <= scores[k][kept].min()


@pytest.mark.parametrize('scope', ['global', 'global_normalized', 'local'])
@pytest.mark.parametrize('cap', [0.3, 0.6])
def test_no_layer_loses_more_than_max_layer_ratio(host_init, scope, cap):
    _, _, scores, _ = host_init
    pruned = select_unimportant(scores, 0.5, scope, max_layer_ratio=cap)
    for k, idx in pruned.items():
        assert idx.numel() <= math.floor(cap * scores[k].numel() + 1e-9)
    if scope != 'local' and cap == 0.6:  # the cap leaves room: the pool still removes ceil(p * N) units
        n = sum(v.numel() for v in scores.values())
        assert sum(v.numel() for v in pruned.values()) == math.ceil(0.5 * n)
    # and the cap binds: without it the raw pool empties residual layers beyond it
    if scope == 'global':
        uncapped = select_unimportant(scores, 0.5, scope)
        assert max(v.numel() / scores[k].numel() for k, v in uncapped.items()) > cap


def test_max_pruned_keeps_one_unit():
    assert max_pruned(16, 1.0) == 15 and max_pruned(16, 0.5) == 8 and max_pruned(10, 0.3) == 3  # 0.3*10 rounding


def test_cost_model_matches_the_flop_counter_on_the_pruned_network(host_init):
    net, topology, scores, cost = host_init
    x = example_clip(net, topology, SIZE)
    assert cost.params == count_params(net)  # cost.macs is FlopCounterMode's total by construction
    pruned = select_unimportant(scores, 0.5, 'global_normalized', align=4)
    predicted = cost.pruned_cost(net, topology, pruned)
    small = copy.deepcopy(net)
    prune(small, pruned, topology)
    assert predicted['macs'] == count_macs(small, x)
    assert predicted['params'] == count_params(small)
    assert sum(predicted['part_macs'].values()) == predicted['macs']
    assert {'backward_trunk', 'forward_trunk', RECONSTRUCTION, 'spynet'} <= set(predicted['part_macs'])


@pytest.mark.parametrize('target, value, align', [('target_mac_ratio', 1.6, 1), ('target_mac_ratio', 1.4, 4),
                                                  ('target_params_ratio', 1.04, 1)])
def test_budget_bisection_meets_the_target_within_2_percent(host_init, target, value, align):
    net, topology, scores, cost = host_init
    ratio, pruned, achieved = find_ratio(scores, cost, net, topology, target, value, 'global_normalized', align, 0.9)
    assert abs(achieved / value - 1) <= BUDGET_TOLERANCE
    # The returned ratio reproduces S, and S really has that cost (counted on the pruned network).
    again = select_unimportant(scores, ratio, 'global_normalized', align, 0.9)
    assert all(torch.equal(again[k], pruned[k]) for k in pruned)
    small = copy.deepcopy(net)
    prune(small, pruned, topology)
    x = example_clip(net, topology, SIZE)
    real = cost.macs / count_macs(small, x) if target == 'target_mac_ratio' else cost.params / count_params(small)
    assert real == pytest.approx(achieved, rel=1e-12)
    for k, idx in pruned.items():  # align respected
        assert (scores[k].numel() - idx.numel()) % align == 0 or idx.numel() == 0


def test_unreachable_target_names_the_reachable_range(host_init):
    net, topology, scores, cost = host_init
    with pytest.raises(ValueError, match=r'ssl\.target_mac_ratio = 50: unreachable; .* can be 1\.0\d* \.\. \d+\.\d+'):
        find_ratio(scores, cost, net, topology, 'target_mac_ratio', 50, 'global_normalized', 1, 0.9)
    # params: SPyNet is never pruned, so a 16-channel BasicVSR cannot lose 10 % of its parameters
    with pytest.raises(ValueError, match=r'target_params_ratio = 1\.1: unreachable'):
        find_ratio(scores, cost, net, topology, 'target_params_ratio', 1.1, 'local', 1, 1.0)


def test_target_between_the_steps_of_align_is_an_error(host_init):
    net, topology, scores, cost = host_init
    # align 16 on 16-channel layers: nothing in the trunks can be cut, only the 64-group layers move in 16-steps.
    with pytest.raises(ValueError, match=r'not reachable within 2%.*nearest MAC ratios'):
        find_ratio(scores, cost, net, topology, 'target_mac_ratio', 1.25, 'local', 16, 1.0)


@pytest.mark.parametrize('d, match', [
    ({'scope': 'globl'}, r"ssl\.scope must be one of \['global', 'global_normalized', 'local'\]"),
    ({'max_layer_ratio': 0}, r'ssl\.max_layer_ratio must be in \(0, 1\]'),
    ({'max_layer_ratio': 1.5}, r'ssl\.max_layer_ratio'),
    ({'target_mac_ratio': 0.8}, r'ssl\.target_mac_ratio must be a number above 1'),
    ({'target_params_ratio': 'big'}, r'ssl\.target_params_ratio must be a number above 1'),
    ({'target_mac_ratio': 2, 'pruning_ratio': 0.5}, r'ssl\.target_mac_ratio chooses the pruning ratio: leave out'),
    ({'target_mac_ratio': 2, 'target_params_ratio': 2}, r'set one budget target'),
    ({'budget_size': [64, 64]}, r'ssl\.budget_size must be \[frames, height, width\]'),
    ({'pruning_ratio': None}, r'ssl\.pruning_ratio must be in \(0, 1\), got None \(or set ssl\.target_mac_ratio'),
    ({'max_layer_ratios': 0.5}, r'did you mean ssl\.max_layer_ratio'),
    ({'budget_exclude': ['spynet']}, r'ssl\.budget_exclude only applies to a budget target'),
    ({'target_params_ratio': 2, 'budget_exclude': 'spynet'}, r'ssl\.budget_exclude must be a list of part names'),
    ({'target_params_ratio': 2, 'budget_exclude': ['']}, r'ssl\.budget_exclude must be a list'),
    ({'scope': 'local', 'pruning_ratio': 0.9, 'max_layer_ratio': 0.8}, r'exceeds ssl\.max_layer_ratio 0\.8'),
])
def test_bad_selection_options_name_the_key(d, match):
    with pytest.raises(ValueError, match=match):
        SSLConfig.from_dict(d)


def test_controller_resolves_a_target_and_reports_the_selection(host_init):
    net, *_ = host_init
    net = copy.deepcopy(net)
    cfg = SSLConfig.from_dict({'method': 'l1', 'scope': 'global_normalized', 'max_layer_ratio': 0.8,
                               'target_mac_ratio': 1.6, 'budget_size': list(SIZE)})
    assert cfg.pruning_ratio is None
    ctrl = SSLController(cfg)
    ctrl.start(net, size=(5, 64, 64))  # budget_size wins over the host's clip
    rep = ctrl.report
    assert 0 < ctrl.ratio < 1 and rep['pruning_ratio'] == ctrl.ratio and rep['size'] == list(SIZE)
    assert abs(rep['mac_ratio'] / 1.6 - 1) <= BUDGET_TOLERANCE
    assert {k: v['pruned'] for k, v in rep['layers'].items()} == {k: int(v.numel()) for k, v in ctrl.pruned.items()}
    assert all(v['pruned'] <= 0.8 * v['units'] for v in rep['layers'].values())
    lines = format_report(rep)
    assert any('MAC ratio x1.' in line for line in lines) and any(line.strip().startswith('fusion') for line in lines)
    restored = SSLController.from_state_dict(ctrl.state_dict())
    assert restored.ratio == ctrl.ratio and restored.report == rep and restored.cfg == cfg


def test_budget_exclude_meets_the_target_without_spynet(host_init):
    """Params counted as the paper counts them (without SPyNet): a ratio that the whole network cannot reach (SPyNet
    dominates a 16-channel BasicVSR) is met on the rest, counted on the built network."""
    net, topology, scores, cost = host_init
    ratio, pruned, achieved = find_ratio(scores, cost, net, topology, 'target_params_ratio', 1.5,
                                         'global_normalized', 1, 0.8, exclude=['spynet'])
    small = copy.deepcopy(net)
    prune(small, pruned, topology)
    spy = count_params(net.spynet)
    real = (count_params(net) - spy) / (count_params(small) - spy)
    assert real == pytest.approx(achieved, rel=1e-12) and abs(real / 1.5 - 1) <= BUDGET_TOLERANCE
    rep = selection_report(net, topology, pruned, cost, ratio, exclude=['spynet'])
    assert rep['budget']['param_ratio'] == pytest.approx(real) and rep['param_ratio'] < rep['budget']['param_ratio']
    assert any(line.strip().startswith('without spynet: params') for line in format_report(rep))


def test_budget_exclude_names_must_be_parts(host_init):
    net, topology, scores, cost = host_init
    with pytest.raises(ValueError, match=r"ssl\.budget_exclude: 'spynt' is not a part of this network; parts: \["):
        find_ratio(scores, cost, net, topology, 'target_params_ratio', 1.5, 'global_normalized', 1, 0.8,
                   exclude=['spynt'])
    with pytest.raises(ValueError, match=r"'upconv1' is not a part of this network \(it is counted in part "
                                         r"'reconstruction'\)"):
        find_ratio(scores, cost, net, topology, 'target_params_ratio', 1.5, 'global_normalized', 1, 0.8,
                   exclude=['upconv1'])


def test_report_without_a_frame_size_has_params_only(host_init):
    net, topology, scores, _ = host_init
    pruned = select_unimportant(scores, 0.5, 'local')
    rep = selection_report(net, topology, pruned, CostModel.measure(net, topology, None), 0.5)
    assert 'macs_dense' not in rep and rep['params_pruned'] < rep['params_dense']
    with pytest.raises(ValueError, match='budget_size'):
        SSLController(SSLConfig.from_dict({'target_mac_ratio': 2})).start(copy.deepcopy(net))
