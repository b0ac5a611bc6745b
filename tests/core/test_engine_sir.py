"""SIR: the α schedule (Δ every T1 up to τ, then T2, then done), L_SIR = ½Σαγ² on S, and exact resume."""
from __future__ import annotations

import io
import math

import pytest
import torch

from ssl_plugin.core import SIRLoss, SparsityRegularizer, gamma_stats

S = {'a': torch.tensor([0, 2]), 'b': torch.tensor([1]), 'empty': torch.empty(0, dtype=torch.int64)}


def gammas(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'a': torch.rand(4, generator=g, dtype=torch.float64).requires_grad_(),
            'b': torch.rand(3, generator=g, dtype=torch.float64).requires_grad_(),
            'empty': torch.rand(2, generator=g, dtype=torch.float64).requires_grad_()}


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize('delta,interval,ceiling,stabilize', [
    (0.03, 3, 0.1, 4),   # τ/Δ not an integer: 4 increments, the last one clamped
    (0.025, 2, 0.1, 5),  # τ/Δ = 4 exactly
    (1e-4, 5, 0.1, 7),   # the official defaults (τ/Δ = 1000, float accumulation); short T2
    (0.05, 1, 0.1, 0),   # no stabilisation: done when τ is reached
])
def test_schedule_timing(delta, interval, ceiling, stabilize):
    reg = SparsityRegularizer(S, delta, interval, ceiling, stabilize)
    increments = math.ceil(round(ceiling / delta, 9))
    grow_end = increments * interval
    done_at = grow_end + stabilize
    assert reg.total_iters() == done_at
    assert reg.current_alpha() == 0 and reg.stage == 'grow'
    for it in range(1, done_at + 3):
        stage = reg.step()
        expected_alpha = min(it // interval * delta, ceiling) if it <= grow_end else ceiling
        assert reg.current_alpha() == pytest.approx(expected_alpha, rel=1e-9, abs=1e-15), it
        if it < grow_end:
            assert stage == 'grow', it
        elif it < done_at:
            assert stage == 'stabilize', it
        else:
            assert stage == 'done', it
        assert reg.done == (it >= done_at)
    assert reg.iter == done_at  # steps after the end do not count
    assert all(float(a.max()) == ceiling and float(a.min()) == ceiling for a in reg.alpha.values())
    assert set(reg.alpha) == {'a', 'b'}  # keys with an empty S carry no α


def test_alpha_stays_at_ceiling_exactly():
    reg = SparsityRegularizer({'k': torch.tensor([0])}, delta=0.03, interval=1, ceiling=0.1, stabilize_iter=3)
    for _ in range(4):
        reg.step()
    assert float(reg.alpha['k'][0]) == 0.1


def test_empty_s_only_stabilizes():
    reg = SparsityRegularizer({'k': torch.empty(0, dtype=torch.int64)}, 0.1, 1, 0.1, 3)
    assert reg.stage == 'stabilize' and reg.total_iters() == 3
    assert [reg.step() for _ in range(3)] == ['stabilize', 'stabilize', 'done']


def test_loss_is_half_sum_alpha_gamma_squared_on_s():
    reg = SparsityRegularizer(S, delta=0.02, interval=1, ceiling=0.1, stabilize_iter=1)
    g = gammas()
    zero = reg.loss(g)
    assert float(zero) == 0 and zero.requires_grad  # before the first increment: zero, but part of the graph
    for _ in range(3):
        reg.step()
    alpha = 0.06
    expected = 0.5 * alpha * (g['a'][0] ** 2 + g['a'][2] ** 2 + g['b'][1] ** 2)
    loss = reg.loss(g)
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)
    assert float(SIRLoss(loss_weight=3.0)(reg, g)) == pytest.approx(3 * float(expected), rel=1e-12)


def test_gradient_is_alpha_gamma_on_s_only():
    reg = SparsityRegularizer(S, delta=0.05, interval=1, ceiling=0.1, stabilize_iter=1)
    reg.step()
    g = gammas(1)
    reg.loss(g).backward()
    for key, gamma in g.items():
        expected = torch.zeros_like(gamma)
        if key in reg.pruned:
            idx = S[key]
            expected[idx] = 0.05 * gamma.detach()[idx]
        grad = torch.zeros_like(gamma) if gamma.grad is None else gamma.grad  # a key without S is not in the graph
        assert torch.allclose(grad, expected, rtol=1e-12, atol=0), key


def test_loss_follows_gamma_dtype_and_device():
    reg = SparsityRegularizer({'k': torch.tensor([1])}, 0.1, 1, 0.1, 1)
    reg.step()
    g = {'k': torch.ones(3, dtype=torch.float32, requires_grad=True)}
    assert reg.loss(g).dtype == torch.float32


def test_state_dict_roundtrip_weights_only_and_exact_resume():
    reg = SparsityRegularizer(S, delta=0.03, interval=2, ceiling=0.1, stabilize_iter=3)
    for _ in range(5):
        reg.step()
    resumed = SparsityRegularizer.from_state_dict(roundtrip(reg.state_dict()))
    assert resumed.iter == 5 and resumed.stage == reg.stage
    g = gammas(2)
    while not reg.done:
        assert resumed.step() == reg.step()
        assert float(resumed.loss(g)) == float(reg.loss(g))
        assert all(torch.equal(resumed.alpha[k], reg.alpha[k]) for k in reg.alpha)
    assert resumed.done and resumed.iter == reg.iter
    # load_state_dict onto a regularizer built with the same S also resumes.
    other = SparsityRegularizer(S, delta=0.03, interval=2, ceiling=0.1, stabilize_iter=3)
    other.load_state_dict(roundtrip(reg.state_dict()))
    assert other.done and other.iter == reg.iter


def test_state_for_another_s_is_refused():
    reg = SparsityRegularizer(S)
    other = SparsityRegularizer({'a': torch.tensor([0, 3])})
    with pytest.raises(ValueError, match='different unimportant set'):
        other.load_state_dict(reg.state_dict())


@pytest.mark.parametrize('kwargs', [dict(delta=0), dict(delta=-1e-4), dict(interval=0), dict(ceiling=0),
                                    dict(stabilize_iter=-1)])
def test_invalid_schedule_is_refused(kwargs):
    with pytest.raises(ValueError, match='invalid SIR schedule'):
        SparsityRegularizer(S, **kwargs)


def test_gamma_stats_mean_abs_of_pruned_and_kept():
    g = {'a': torch.tensor([-0.1, 1.0, 0.3, 2.0]), 'c': torch.tensor([1.0, 3.0])}
    stats = gamma_stats(g, {'a': torch.tensor([0, 2])})
    assert stats['a'] == pytest.approx((0.2, 1.5))
    p, k = stats['c']
    assert math.isnan(p) and k == pytest.approx(2.0)
