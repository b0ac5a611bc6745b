"""Temporal Finetuning: hidden states per frame and direction, L_TF, a frozen teacher, uni-directional nets."""
from __future__ import annotations

import copy

import pytest
import torch
from engine_helpers import DTYPE, ToyUniVSR, build, clip, frames

from ssl_plugin.core import (
    HiddenStateRecorder,
    TFLoss,
    describe,
    frozen_teacher,
    insert_scaling_factors,
    merge_scaling_factors,
    prune,
    teacher_hidden_states,
    temporal_finetuning_loss,
)


def toy(feat=6, blocks=2, seed=0):
    torch.manual_seed(seed)
    return ToyUniVSR(num_feat=feat, num_block=blocks).to(DTYPE)


@pytest.mark.parametrize('arch,directions', [('BasicVSR', {'backward', 'forward'}),
                                             ('BasicVSRNet', {'backward', 'forward'}),
                                             ('BasicVSRUni', {'forward'}), ('ToyUniVSR', {'forward'})])
def test_recorder_captures_one_state_per_frame_per_direction(arch, directions):
    net = build(arch, 8, 1)
    n = frames(arch) + (arch == 'ToyUniVSR')  # host forwards run SPyNet: keep their clips short
    x = clip(arch, n=n)
    with HiddenStateRecorder(net) as rec:
        out = net(x)
    assert set(rec.states) == directions
    for states in rec.states.values():
        assert len(states) == n
        assert all(s.shape == (1, 8, *x.shape[-2:]) for s in states)
    assert out.requires_grad and all(s.requires_grad for v in rec.states.values() for s in v)
    # Hooks are gone afterwards.
    for path in describe(net).hidden.values():
        assert not net.get_submodule(path)._forward_hooks


def test_states_are_in_computation_order():
    """The backward branch runs from the last frame to the first: its first state depends on the last frame only."""
    net = build('BasicVSR', 8, 1)
    x = clip('BasicVSR', n=2)
    y = x.clone()
    y[:, 0] = torch.rand_like(y[:, 0])
    a = teacher_hidden_states(net, x)
    b = teacher_hidden_states(net, y)
    assert torch.equal(a['backward'][0], b['backward'][0])  # frame 1, computed first
    assert not torch.allclose(a['backward'][1], b['backward'][1])  # frame 0
    assert not torch.allclose(a['forward'][0], b['forward'][0])  # frame 0, computed first


def test_loss_zero_for_identical_states_positive_otherwise():
    net = toy()
    x = clip('ToyUniVSR', n=3)
    teacher = teacher_hidden_states(net, x)
    with HiddenStateRecorder(net) as rec:
        net(x)
    assert float(TFLoss()(rec.states, teacher)) == 0.0
    net(x)  # outside the context: nothing more is recorded
    assert len(rec.states['forward']) == 3
    other = toy(seed=1)
    with HiddenStateRecorder(other) as rec:
        other(x)
    loss = TFLoss(loss_weight=2.0)(rec.states, teacher)
    assert float(loss) > 0
    assert float(loss) == pytest.approx(2 * float(temporal_finetuning_loss(rec.states, teacher)))


def test_pruned_student_matches_its_teacher_exactly(pruned_case):
    """RSC keeps the hidden state's width and channel order: with γ of S = 0 the pruned student's hidden states are
    the teacher's (γ merged), so L_TF starts at 0."""
    case = pruned_case('BasicVSR', 8, 2, 0.5, 'global', 1)
    teacher = build('BasicVSR', 8, 2)
    insert_scaling_factors(teacher, describe(teacher))
    teacher.load_state_dict(case.dense_state, strict=True)
    merge_scaling_factors(teacher, describe(teacher))
    t_states = teacher_hidden_states(frozen_teacher(teacher), case.x)
    with torch.no_grad(), HiddenStateRecorder(case.net) as rec:
        case.net(case.x)
    assert float(temporal_finetuning_loss(rec.states, t_states)) < 1e-12


def test_gradient_flows_to_the_student_only():
    teacher, student = frozen_teacher(toy(seed=0)), toy(seed=1)
    topo = describe(student)
    prune(student, {'trunk.main.2.0.conv1': torch.tensor([0, 2]), 'trunk.main.2.1.conv2': torch.tensor([5])}, topo)
    x = clip('ToyUniVSR', n=3)
    t_states = teacher_hidden_states(teacher, x)
    assert not any(s.requires_grad for v in t_states.values() for s in v)
    with HiddenStateRecorder(student) as rec:
        student(x)
    TFLoss()(rec.states, t_states).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    trunk = [p for n, p in student.named_parameters() if n.startswith('trunk.')]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trunk)
    # Reconstruction convs do not shape the hidden state: L_TF gives them no gradient.
    assert all(p.grad is None for n, p in student.named_parameters() if not n.startswith('trunk.'))


def test_teacher_runs_in_eval_without_grad_and_keeps_its_mode():
    teacher = toy().train()
    seen = []
    teacher.register_forward_pre_hook(lambda m, a: seen.append((m.training, torch.is_grad_enabled())))
    teacher_hidden_states(teacher, clip('ToyUniVSR'))
    assert seen == [(False, False)] and teacher.training
    frozen = frozen_teacher(copy.deepcopy(teacher))
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())


def test_recorder_can_detach_and_takes_explicit_hidden_paths():
    net = toy()
    with HiddenStateRecorder(net, hidden={'deep': 'trunk.main.2.1'}, detach=True) as rec:
        net(clip('ToyUniVSR', n=2))
    assert list(rec.states) == ['deep'] and len(rec.states['deep']) == 2
    assert not rec.states['deep'][0].requires_grad


def _states(*values):
    return {'forward': [torch.tensor(v, dtype=DTYPE) for v in values]}


def test_distances():
    s = _states([1.0, 2.0], [0.0, 0.0])
    t = _states([0.0, 0.0], [0.0, 3.0])
    # Mean over steps of the per-step mean distance.
    assert float(temporal_finetuning_loss(s, t, 'l1')) == pytest.approx((1.5 + 1.5) / 2)
    assert float(temporal_finetuning_loss(s, t, 'l2')) == pytest.approx((2.5 + 4.5) / 2)
    charb = sum(((d * d + 1e-12) ** 0.5) for d in (1.0, 2.0, 0.0, 3.0)) / 4  # eps keeps the gradient finite at 0
    assert float(temporal_finetuning_loss(s, t, 'charbonnier')) == pytest.approx(charb, rel=1e-12)
    assert float(TFLoss(0.5, 'l2')(s, t)) == pytest.approx(0.5 * 3.5)
    # Directions are averaged step by step.
    both_s, both_t = {**s, 'backward': s['forward'][:1]}, {**t, 'backward': t['forward'][:1]}
    assert float(temporal_finetuning_loss(both_s, both_t)) == pytest.approx((1.5 + 1.5 + 1.5) / 3)


def test_bad_tf_inputs_are_refused():
    s = _states([1.0, 2.0])
    with pytest.raises(ValueError, match='distance must be one of'):
        TFLoss(1.0, 'cosine')
    with pytest.raises(ValueError, match='distance must be one of'):
        temporal_finetuning_loss(s, s, 'huber')
    with pytest.raises(ValueError, match='directions differ'):
        temporal_finetuning_loss(s, {'backward': s['forward']})
    with pytest.raises(ValueError, match='recorded 2 steps, teacher 1'):
        temporal_finetuning_loss(_states([1.0], [2.0]), _states([1.0]))
    with pytest.raises(ValueError, match='shapes differ'):
        temporal_finetuning_loss(s, _states([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match='recorded 0 steps'):
        temporal_finetuning_loss({'forward': []}, {'forward': []})
