"""The Algorithm-1 controller: option validation, the l1 and ssl methods, resume and identical EMA pruning."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from engine_helpers import DTYPE, EXACT, ToyUniVSR, build, clip, max_diff, run

from ssl_plugin.core import (
    GAMMA_IN,
    GAMMA_OUT,
    RSCBlock,
    SIRLoss,
    SpecError,
    apply_spec,
    describe,
    insert_scaling_factors,
    scaling_factors,
)
from ssl_plugin.core.algorithm import SSLConfig, SSLController
from ssl_plugin.core.sir import SparsityRegularizer

FAST = {'delta': 0.05, 'interval': 2, 'ceiling': 0.1, 'stabilize_iter': 3}  # done after 2*2 + 3 = 7 steps


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def toy(seed=0, feat=8, blocks=2):
    torch.manual_seed(seed)
    return ToyUniVSR(num_feat=feat, num_block=blocks).to(DTYPE)


# -- SSLConfig -------------------------------------------------------------------------------------------------------

def test_defaults_are_the_papers_but_the_pool_is_normalised():
    cfg = SSLConfig.from_dict(None)
    assert (cfg.method, cfg.pruning_ratio, cfg.scope, cfg.align) == ('ssl', 0.5, 'global_normalized', 1)
    assert cfg.max_layer_ratio == 0.8 and cfg.target is None
    assert (cfg.reg.delta, cfg.reg.interval, cfg.reg.ceiling, cfg.reg.stabilize_iter) == (1e-4, 5, 0.1, 14000)
    assert SSLConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize('options,key', [
    ({'pruning_ration': 0.5}, 'ssl.pruning_ration'),
    ({'reg': {'detla': 1e-4}}, 'ssl.reg.detla'),
    ({'method': 'magnitude'}, 'ssl.method'),
    ({'pruning_ratio': 1.0}, 'ssl.pruning_ratio'),
    ({'pruning_ratio': 0}, 'ssl.pruning_ratio'),
    ({'pruning_ratio': '0.5'}, 'ssl.pruning_ratio'),
    ({'scope': 'layer'}, 'ssl.scope'),
    ({'align': 0}, 'ssl.align'),
    ({'align': 2.0}, 'ssl.align'),
    ({'skip': 'spynet'}, 'ssl.skip'),
    ({'skip': [1]}, 'ssl.skip'),
    ({'reg': {'delta': 0}}, 'ssl.reg.delta'),
    ({'reg': {'interval': 0}}, 'ssl.reg.interval'),
    ({'reg': {'interval': 2.5}}, 'ssl.reg.interval'),
    ({'reg': {'ceiling': -1}}, 'ssl.reg.ceiling'),
    ({'reg': {'stabilize_iter': -1}}, 'ssl.reg.stabilize_iter'),
    # PyYAML reads `1e-4` (no dot) as the string '1e-4': that must be a clear error too, not a TypeError.
    ({'reg': {'delta': '1e-4'}}, 'ssl.reg.delta'),
    ({'reg': {'ceiling': '0.1'}}, 'ssl.reg.ceiling'),
])
def test_config_errors_name_the_key(options, key):
    with pytest.raises(ValueError, match=key.replace('.', r'\.')):
        SSLConfig.from_dict(options)


def test_config_error_prefix_is_configurable():
    with pytest.raises(ValueError, match=r'model\.ssl\.scope'):
        SSLConfig.from_dict({'scope': 'x'}, where='model.ssl')


# -- method l1 -------------------------------------------------------------------------------------------------------

def test_l1_method_prunes_at_start():
    net = build('BasicVSR', 8, 2)
    dense_state = copy.deepcopy(net.state_dict())
    ctrl = SSLController(SSLConfig.from_dict({'method': 'l1', 'pruning_ratio': 0.5}))
    ctrl.start(net)
    assert ctrl.stage == 'finetune' and ctrl.sir is None and ctrl.spec is not None
    assert isinstance(net.forward_trunk.main[2][0], RSCBlock)
    assert not scaling_factors(net, describe(build('BasicVSR', 8, 2)))
    assert ctrl.regularization_loss(net) is None and ctrl.step() is False
    # The teacher is the dense network as it was.
    teacher = build('BasicVSR', 8, 2, seed=7)
    teacher.load_state_dict(ctrl.teacher_state, strict=True)
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in dense_state.items())


# -- method ssl ------------------------------------------------------------------------------------------------------

def test_ssl_method_full_cycle():
    net, ema = toy(), None
    ema = copy.deepcopy(net)
    ctrl = SSLController(SSLConfig.from_dict({'pruning_ratio': 0.5, 'reg': FAST}))
    ctrl.start(net, others=[ema])
    topo = describe(net)
    gammas = scaling_factors(net, topo)
    assert list(gammas) == topo.keys() and len(scaling_factors(ema, topo)) == len(gammas)
    assert ctrl.stage == 'sparsity' and sum(v.numel() for v in ctrl.pruned.values()) > 0
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x = clip('ToyUniVSR', n=2)
    target = run(toy(seed=5), x)
    sir = SIRLoss(loss_weight=50.0)
    due = []
    for it in range(1, 12):
        opt.zero_grad()
        rec = (net(x) - target).abs().mean()
        loss = rec + sir(ctrl.sir, scaling_factors(net, topo))
        assert float(ctrl.regularization_loss(net)) * 50.0 == pytest.approx(float(loss - rec), rel=1e-12, abs=0)
        loss.backward()
        opt.step()
        if ctrl.step():
            due.append(it)
            break
    assert due == [7] and ctrl.prune_due
    logs = ctrl.log_values(net)
    assert logs['stage'] == 0.0 and logs['alpha'] == pytest.approx(0.1)
    assert logs['gamma_pruned'] < logs['gamma_kept']
    assert logs['num_pruned'] == sum(v.numel() for v in ctrl.pruned.values())
    assert any(k.startswith('gamma_pruned/') for k in logs) and any(k.startswith('gamma_kept/') for k in logs)
    # SIR shrank the γ of S below the others.
    shrunk = [float(g[ctrl.pruned[k]].abs().mean()) for k, g in gammas.items() if ctrl.pruned[k].numel()]
    assert max(shrunk) < 1.0

    with torch.no_grad():
        dense_out = run(net, x)
    spec = ctrl.prune(net, others=[ema])
    assert ctrl.stage == 'finetune' and not ctrl.prune_due and spec == ctrl.spec
    assert ctrl.regularization_loss(net) is None and ctrl.step() is False
    assert ctrl.log_values(net) == {'stage': 1.0, 'num_pruned': logs['num_pruned']}
    # EMA is pruned identically: same keys and shapes, same RSC indices.
    assert {k: v.shape for k, v in ema.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    for name, buf in net.named_buffers():
        assert torch.equal(buf, dict(ema.named_buffers())[name])
    # The teacher state is a plain dense state dict (γ merged) of the network before the cut.
    teacher = toy(seed=9)
    teacher.load_state_dict(ctrl.teacher_state, strict=True)
    assert max_diff(run(teacher, x), dense_out) < 1e-12
    assert not any(k.endswith((GAMMA_OUT, GAMMA_IN)) for k in ctrl.teacher_state)
    # The pruned network keeps training.
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    (net(x) - target).abs().mean().backward()
    opt.step()


def test_skip_protects_units():
    net = build('BasicVSR', 8, 2)
    ctrl = SSLController(SSLConfig.from_dict({'pruning_ratio': 0.7, 'skip': ['*.conv2', 'upconv1']}))
    ctrl.start(net)
    topo = describe(net)
    assert not any(k.endswith('.conv2') or k == 'upconv1' for k in ctrl.pruned)
    assert not hasattr(net.upconv1, GAMMA_OUT) and not hasattr(net.forward_trunk.main[2][0].conv2, GAMMA_OUT)
    ctrl.prune(net)
    for unit in topo.units:
        if hasattr(unit, 'conv2_path'):
            assert net.get_submodule(unit.path).writes_all
    bad = SSLController(SSLConfig.from_dict({'skip': ['spynet.*']}))
    with pytest.raises(ValueError, match='matches no prunable unit'):
        bad.start(build('BasicVSR', 8, 1))


# -- resume ----------------------------------------------------------------------------------------------------------

def test_resume_in_the_sparsity_stage_is_exact():
    net = toy()
    ctrl = SSLController(SSLConfig.from_dict({'reg': FAST}))
    ctrl.start(net)
    for _ in range(3):
        ctrl.step()
    state = roundtrip(ctrl.state_dict())
    weights = roundtrip(net.state_dict())
    resumed = SSLController.from_state_dict(state)
    fresh = toy(seed=4)
    resumed.restore_structure(fresh)
    fresh.load_state_dict(weights, strict=True)
    assert resumed.stage == 'sparsity' and resumed.cfg == ctrl.cfg
    assert all(torch.equal(resumed.pruned[k], v) for k, v in ctrl.pruned.items())
    x = clip('ToyUniVSR')
    assert max_diff(run(fresh, x), run(net, x)) == 0
    for _ in range(5):
        assert resumed.step() == ctrl.step()
        assert float(resumed.regularization_loss(fresh)) == float(ctrl.regularization_loss(net))
    assert resumed.prune_due and ctrl.prune_due


@pytest.mark.parametrize('method', ['ssl', 'l1'])
def test_resume_in_the_finetune_stage_rebuilds_the_structure(method):
    net = build('BasicVSR', 8, 2)
    ema = copy.deepcopy(net)
    ctrl = SSLController(SSLConfig.from_dict({'method': method, 'reg': FAST, 'align': 2}))
    ctrl.start(net, others=[ema])
    if method == 'ssl':
        while not ctrl.step():
            pass
        ctrl.prune(net, others=[ema])
    resumed = SSLController.from_state_dict(roundtrip(ctrl.state_dict()))
    assert resumed.stage == 'finetune' and resumed.spec == ctrl.spec
    assert all(torch.equal(resumed.teacher_state[k], v) for k, v in ctrl.teacher_state.items())
    fresh = build('BasicVSR', 8, 2, seed=3)
    resumed.restore_structure(fresh)
    fresh.load_state_dict(roundtrip(net.state_dict()), strict=True)
    fresh_ema = build('BasicVSR', 8, 2, seed=4)
    resumed.restore_structure(fresh_ema)
    fresh_ema.load_state_dict(roundtrip(ema.state_dict()), strict=True)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_restore_structure_without_spec_in_finetune_is_an_error():
    ctrl = SSLController(SSLConfig())
    ctrl.stage = 'finetune'
    with pytest.raises(SpecError, match='without a pruning spec'):
        ctrl.restore_structure(toy())


def test_controller_state_is_weights_only_safe_in_every_stage():
    net = toy()
    ctrl = SSLController(SSLConfig.from_dict({'reg': FAST}))
    for phase in ('start', 'sparsity', 'finetune'):
        if phase == 'start':
            ctrl.start(net)
        elif phase == 'finetune':
            while not ctrl.step():
                pass
            ctrl.prune(net)
        state = roundtrip(ctrl.state_dict())  # raises if anything but tensors / containers / str / numbers
        assert SSLController.from_state_dict(state).stage == ctrl.stage


def test_pruned_copy_matches_a_spec_rebuild():
    """prune() on the network and apply_spec() on a fresh one give the same skeleton (what resume relies on)."""
    net = toy()
    ctrl = SSLController(SSLConfig.from_dict({'method': 'l1', 'scope': 'local', 'pruning_ratio': 0.4}))
    ctrl.start(net)
    fresh = apply_spec(toy(seed=2), ctrl.spec)
    fresh.load_state_dict(net.state_dict(), strict=True)
    x = clip('ToyUniVSR')
    assert max_diff(run(fresh, x), run(net, x)) <= EXACT


def test_start_on_a_network_that_already_has_gamma_is_idempotent():
    net = toy()
    insert_scaling_factors(net, describe(net))
    ctrl = SSLController(SSLConfig.from_dict({'reg': FAST}))
    ctrl.start(net)
    assert len(scaling_factors(net, describe(net))) == len(describe(net).keys())


# -- width advice ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('method', ['ssl', 'l1'])
def test_width_advice_names_layers_left_at_unaligned_counts(method):
    ctrl = SSLController(SSLConfig.from_dict({'method': method, 'pruning_ratio': 0.5, 'scope': 'local'}))
    assert ctrl.width_advice() is None  # nothing chosen yet
    net = build('BasicVSR', 8, 2)
    topo = describe(net)
    ctrl.start(net)
    kept = {k: ctrl.unit_counts[k] - ctrl.pruned[k].numel() for k in topo.keys() if k in ctrl.pruned}
    odd = [k for k, v in kept.items() if v % 8]
    assert odd and all(kept[k] % 4 == 0 for k in kept)  # 8-unit layers keep 4, 64-unit layers keep 32
    advice = ctrl.width_advice()
    assert f'{len(odd)} of {len(kept)} pruned layers' in advice and f'{odd[0]}: 4' in advice and 'align: 8' in advice
    assert ctrl.width_advice(multiple=4) is None


def test_width_advice_is_silent_when_align_rounds_counts():
    ctrl = SSLController(SSLConfig.from_dict({'pruning_ratio': 0.3, 'scope': 'global', 'align': 8}))
    ctrl.start(build('BasicVSR', 16, 2))
    assert any(v.numel() for v in ctrl.pruned.values())
    assert ctrl.width_advice() is None


@pytest.mark.parametrize('reg', [dict(), dict(delta=0.05, interval=1, ceiling=0.1, stabilize_iter=2),
                                 dict(delta=0.03, interval=3, ceiling=0.1, stabilize_iter=0)])
def test_sparsity_iters_is_the_length_the_regularizer_runs(reg):
    """SSLConfig.sparsity_iters (what both hosts, their checks, the configs' tests and the demo use) is exactly the
    number of steps after which the regularizer reports the stage done."""
    cfg = SSLConfig.from_dict(dict(reg=reg))
    r = cfg.reg
    sir = SparsityRegularizer({'k': torch.tensor([0, 2])}, r.delta, r.interval, r.ceiling, r.stabilize_iter)
    assert sir.total_iters() == cfg.sparsity_iters
    if cfg.sparsity_iters < 100:
        steps = 0
        while sir.step() != 'done':
            steps += 1
        assert steps + 1 == cfg.sparsity_iters
    assert SSLConfig.from_dict(dict(method='l1', reg=reg)).sparsity_iters == 0
