"""Method ``aligned`` (ASSL-style): one kept channel set per trunk skip path, shared by every conv tied to it.

With the shared γ of S exactly 0 the dense network computes what the thinner pruned network computes: output, and the
hidden states at the kept channels (the pruned ones are exactly 0 in the dense network).
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
from engine_helpers import EXACT, build, clip, max_diff, randomize, run, set_gammas

from ssl_plugin.core import (
    GAMMA_SKIP,
    AlignedGroup,
    HiddenStateRecorder,
    RSCBlock,
    SpecError,
    apply_spec,
    count_params,
    describe,
    insert_scaling_factors,
    l1_scores,
    prune,
    scaling_factors,
    select_unimportant,
)
from ssl_plugin.core import checkpoint as core_ckpt
from ssl_plugin.core.algorithm import SSLConfig, SSLController
from ssl_plugin.core.criterion import coupled_scores, tie_kept_counts
from ssl_plugin.core.temporal import at_channels, teacher_hidden_states, temporal_finetuning_loss

ARCHS = ('BasicVSR', 'BasicVSRUni', 'BasicVSRNet')
WIDTH = {'BasicVSR': 'num_feat', 'BasicVSRUni': 'num_feat', 'BasicVSRNet': 'mid_channels'}
FAST = {'delta': 0.05, 'interval': 2, 'ceiling': 0.1, 'stabilize_iter': 3}


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _aligned_case(arch, feat=8, blocks=2, ratio=0.5):
    net = build(arch, feat, blocks)
    randomize(net, seed=1)
    topology = describe(net, aligned=True)
    gammas = insert_scaling_factors(net, topology)
    scores = l1_scores(net, topology)
    pruned = tie_kept_counts(select_unimportant(scores, ratio), scores, topology.width_ties())
    set_gammas(gammas, pruned)
    x = clip(arch)
    with HiddenStateRecorder(net, topology.hidden) as dense_rec:
        y_dense = run(net, x)
    dense_state = {k: v.clone() for k, v in net.state_dict().items()}
    spec = prune(net, pruned, topology)
    with HiddenStateRecorder(net, topology.hidden) as rec:
        y = run(net, x)
    return net, topology, pruned, spec, x, y_dense, y, dense_rec.states, rec.states, dense_state


@pytest.fixture(scope='module')
def cases():
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = _aligned_case(arch)
        return cache[arch]
    return get


@pytest.mark.parametrize('arch', ARCHS)
def test_thinner_network_equals_dense_with_gamma_of_s_zero(cases, arch):
    net, topo, pruned, spec, x, y_dense, y, dense_h, h, _ = cases(arch)
    assert max_diff(y, y_dense) <= EXACT
    groups = [u for u in topo.units if isinstance(u, AlignedGroup)]
    assert groups and all(pruned[g.key].numel() for g in groups)  # the skip path itself is cut
    assert any(pruned[k].numel() for k in pruned if k.endswith('.conv1'))  # inner filters stay prunable
    kept = {g.path: spec['units'][g.path]['channels'] for g in groups}
    assert len({len(v) for v in kept.values()}) == 1  # trunks allocated from one width keep one count
    assert getattr(net, WIDTH[arch]) == len(next(iter(kept.values()))) < 8
    for direction, trunk in topo.hidden.items():
        ch = kept[trunk]
        gone = [c for c in range(8) if c not in ch]
        for dense_state, state in zip(dense_h[direction], h[direction]):
            assert state.shape[1] == len(ch)  # the hidden state itself is thinner
            assert max_diff(state, dense_state[:, ch]) <= EXACT
            assert float(dense_state[:, gone].abs().max()) == 0
    for g in groups:
        for b in g.blocks:
            block = net.get_submodule(b)
            assert isinstance(block, RSCBlock) and block.reads_all and block.writes_all and block.width == len(ch)
        assert net.get_submodule(g.writers[0]).out_channels == len(kept[g.path])
        assert net.get_submodule(g.writers[0]).in_channels == 3 + len(kept[g.path])


def test_the_check_fails_when_the_shared_gamma_is_not_zero(cases):
    net, topo, pruned, spec, x, _, y, _, _, dense_state = cases('BasicVSRUni')
    dense = build('BasicVSRUni', 8, 2)
    gammas = insert_scaling_factors(dense, topo)
    dense.load_state_dict(dense_state, strict=True)
    with torch.no_grad():
        gammas['forward_trunk@skip'][pruned['forward_trunk@skip']] = 0.5
    assert max_diff(run(dense, x), y) > 1e-4


def test_spec_rebuilds_the_aligned_net_exactly_and_weights_only(cases, arch='BasicVSR'):
    net, topo, pruned, spec, x, _, y, _, _, _ = cases(arch)
    spec, state = roundtrip(spec), roundtrip(net.state_dict())
    assert spec['format_version'] == 2
    assert {e['kind'] for e in spec['units'].values()} >= {'aligned', 'aligned_residual'}
    fresh = apply_spec(build(arch, 8, 2, seed=7), spec)
    fresh.load_state_dict(state, strict=True)
    assert max_diff(run(fresh, x), y) == 0 and count_params(fresh) == count_params(net)
    assert getattr(fresh, WIDTH[arch]) == getattr(net, WIDTH[arch])
    with pytest.raises(SpecError, match='different width'):
        apply_spec(build(arch, 12, 2), spec)
    old = copy.deepcopy(spec)
    old['format_version'] = 1  # a format-1 reader never knew these kinds
    with pytest.raises(SpecError, match="unknown kind 'aligned"):
        apply_spec(build(arch, 8, 2), old)


def test_format_1_specs_still_load():
    net = build('BasicVSRUni', 8, 1)
    topo = describe(net)
    spec = prune(net, select_unimportant(l1_scores(net, topo), 0.5), topo)
    v1 = dict(copy.deepcopy(spec), format_version=1)
    fresh = apply_spec(build('BasicVSRUni', 8, 1, seed=3), v1)
    fresh.load_state_dict(net.state_dict(), strict=True)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    assert fresh.num_feat == 8 and isinstance(fresh.forward_trunk.main[2][0], RSCBlock)


def test_one_tied_gamma_per_group_and_the_coupled_score_rule():
    net = build('BasicVSRUni', 8, 2)
    randomize(net, seed=4)
    topo = describe(net, aligned=True)
    before = count_params(net)
    gammas = insert_scaling_factors(net, topo)
    group = topo.unit('forward_trunk')
    tied = [net.get_submodule(p).ssl_gamma_skip for p in group.writers]
    assert len(tied) == 3 and all(t is gammas[group.key] for t in tied)
    assert count_params(net) == before + 8 + sum(8 for k in topo.keys() if k.endswith('.conv1')) \
        + sum(g.numel() for k, g in gammas.items() if k not in (group.key,) and not k.endswith('.conv1'))
    assert describe(net).is_aligned  # a network carrying aligned γ is described in its aligned view
    assert sum(1 for n, _ in net.named_parameters() if n.endswith(GAMMA_SKIP)) == 1
    # Rule: mean over writer filters and reader input slices of each slice's mean |W| (sum |W| without normalize).
    c = 5
    slices = [net.get_submodule(p).weight[c] for p in group.writers]
    slices += [net.get_submodule(r.path).weight[:, r.offset + c] for r in group.readers]
    assert {r.path for r in group.readers} == {'forward_trunk.main.0', 'upconv1'} | {
        f'{b}.conv1' for b in group.blocks}
    for normalize, f in ((True, torch.mean), (False, torch.sum)):
        want = torch.stack([f(s.detach().abs().double()) for s in slices]).mean()
        assert float(coupled_scores(net, group, normalize)[c]) == pytest.approx(float(want), rel=1e-12)


def test_tied_groups_keep_the_larger_count():
    scores = {'a@skip': torch.arange(6.0), 'b@skip': torch.arange(6.0)}
    pruned = {'a@skip': torch.tensor([0, 1, 2]), 'b@skip': torch.tensor([0])}
    out = tie_kept_counts(pruned, scores, [('a@skip', 'b@skip')])
    assert out['a@skip'].tolist() == [0] and out['b@skip'].tolist() == [0]
    assert tie_kept_counts(pruned, {'a@skip': scores['a@skip']}, [('a@skip', 'b@skip')])['a@skip'].numel() == 0


def test_networks_without_groups_and_bad_methods_are_refused():
    with pytest.raises(TypeError, match='no aligned coupling groups'):
        describe(build('IconVSR', 8, 1), aligned=True)
    with pytest.raises(ValueError, match="method must be one of .*'aligned'"):
        SSLConfig.from_dict({'method': 'asl'})


def test_controller_cycle_resume_and_tf_at_kept_channels():
    """Sparsity stage on the shared γ, resume from a saved state, prune; TF against the dense teacher compares its
    kept channels only, so with the γ of S at 0 L_TF starts at 0."""
    cfg = SSLConfig.from_dict({'method': 'aligned', 'pruning_ratio': 0.5, 'reg': FAST})
    assert cfg.sparsity_iters == 7
    net = build('BasicVSRUni', 8, 2)
    randomize(net, seed=5)
    ctrl = SSLController(cfg)
    ctrl.configure(teacher_factory=lambda: build('BasicVSRUni', 8, 2, seed=9))
    ctrl.start(net)
    assert ctrl.pruned['forward_trunk@skip'].numel()
    topo = ctrl.topology(net)
    assert topo.is_aligned and set(scaling_factors(net, topo)) == set(ctrl.pruned)
    x = clip('BasicVSRUni')
    for _ in range(3):
        net.zero_grad()
        ctrl.regularization_loss(net).backward()
        ctrl.step()
    # Resume: the saved state (tied γ under each writer) rebuilds the same structure and output.
    state, weights = roundtrip(ctrl.state_dict()), roundtrip(net.state_dict())
    fresh = build('BasicVSRUni', 8, 2, seed=6)
    resumed = SSLController.from_state_dict(state)
    resumed.restore_structure(fresh)
    fresh.load_state_dict(weights, strict=True)
    assert max_diff(run(fresh, x), run(net, x)) == 0
    other = build('BasicVSRUni', 8, 2, seed=8)
    assert core_ckpt.load_network_state(other, weights) == 'scaled'  # strict: every tied entry has its place
    assert set(scaling_factors(other, describe(other))) == set(ctrl.pruned)
    with torch.no_grad():
        for key, g in scaling_factors(net, topo).items():
            g[ctrl.pruned[key]] = 0
    spec = ctrl.prune(net)
    assert net.num_feat < 8 and ctrl.hidden_channels(topo.hidden) == {
        'forward': spec['units']['forward_trunk']['channels']}
    teacher_states = teacher_hidden_states(ctrl.teacher(), x, topo.hidden)
    with torch.no_grad(), HiddenStateRecorder(net, topo.hidden) as rec:
        net(x)
    with pytest.raises(ValueError, match='shapes differ'):  # thinner states: no channel-by-channel comparison
        temporal_finetuning_loss(rec.states, teacher_states)
    kept = at_channels(teacher_states, ctrl.hidden_channels(topo.hidden))
    assert float(temporal_finetuning_loss(rec.states, kept)) < 1e-12
    with torch.no_grad(), ctrl.clip_losses(net, x) as terms:  # the controller's TF term does the same
        net(x)
    assert float(terms['tf']) < 1e-12


@pytest.mark.parametrize('arch', ['BasicVSR', 'BasicVSRUni'])
def test_selection_cost_of_an_aligned_cut_matches_the_flop_counter(arch):
    """The selection report (and budget bisection's cost model) counts a thinner skip path: every writer's filters and
    every reader's inputs, not only the residual blocks' own dimensions."""
    from ssl_plugin.core import count_macs
    from ssl_plugin.core.selection import CostModel

    net = build(arch, 8, 2)
    randomize(net, seed=3)
    topo = describe(net, aligned=True)
    x = clip(arch)
    cost = CostModel.measure(net, topo, x)
    pruned = SSLController(SSLConfig.from_dict({'method': 'aligned', 'pruning_ratio': 0.5})).choose(
        net, topo, l1_scores(net, topo))[1]
    assert any(k.endswith('@skip') and v.numel() for k, v in pruned.items())
    predicted = cost.pruned_cost(net, topo, pruned)
    small = copy.deepcopy(net)
    prune(small, pruned, topo)
    assert predicted['macs'] == count_macs(small, x) and predicted['params'] == count_params(small)


@pytest.mark.parametrize('arch', ['BasicVSR', 'BasicVSRUni'])
def test_budget_target_with_method_aligned_ties_trunks_and_meets_the_target(arch):
    """A params target with method aligned: the bisection selects with the trunks' tie (one kept count for both
    directions' skip paths) and the cost of that tied cut; the built network meets the target without SPyNet."""
    from ssl_plugin.core import count_params

    net = build(arch, 16, 2)
    randomize(net, seed=3)
    topo = describe(net, aligned=True)
    cfg = SSLConfig.from_dict({'method': 'aligned', 'target_params_ratio': 1.6, 'budget_exclude': ['spynet']})
    _, pruned, report = SSLController(cfg).choose(net, topo, l1_scores(net, topo))
    for tie in topo.width_ties():
        assert len({int(pruned[k].numel()) for k in tie}) == 1, tie
    assert any(k.endswith('@skip') and v.numel() for k, v in pruned.items())
    spy = count_params(net.spynet)
    dense = count_params(net) - spy
    small = copy.deepcopy(net)
    prune(small, pruned, topo)
    achieved = dense / (count_params(small) - spy)
    assert abs(achieved / 1.6 - 1) <= 0.02
    assert report['budget']['exclude'] == ['spynet']
    assert report['budget']['params_pruned'] == count_params(small) - spy
    assert report['budget']['param_ratio'] == pytest.approx(achieved)
