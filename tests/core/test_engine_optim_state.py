"""Adam state across the cut: moments and step counts follow every surviving parameter, sliced to the kept indices and
rescaled to the merged γ, so the first finetuning step is the step the dense network would have taken."""
from __future__ import annotations

import pytest
import torch
from engine_helpers import DTYPE, ToyUniVSR, build, clip, randomize, set_gammas

from ssl_plugin.core import describe, insert_scaling_factors, l1_scores, optim_state, prune, select_unimportant


def _adam_trained(net, gammas, x, steps=3):
    """A few Adam steps on the weights (γ frozen), so every weight has non-trivial moments and step counts."""
    for g in gammas.values():
        g.requires_grad_(False)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    return opt


def _cut_toy(res_scale, gamma_low, gamma_high, seed=0):
    torch.manual_seed(seed)
    net = ToyUniVSR(num_feat=8, num_block=2, res_scale=res_scale).to(DTYPE)
    randomize(net, seed=seed + 1)
    topo = describe(net)
    gammas = insert_scaling_factors(net, topo)
    pruned = select_unimportant(l1_scores(net, topo), 0.5, 'local')
    set_gammas(gammas, pruned, seed=seed + 2, low=gamma_low, high=gamma_high)
    x = clip('ToyUniVSR', n=2)
    opt = _adam_trained(net, gammas, x)
    return net, topo, pruned, opt, x


def test_first_step_after_the_cut_equals_the_dense_step():
    """γ of S = 0 and kept γ = 1: the pruned network computes the same function with the same gradients, so with
    the carried state one Adam step moves every kept weight exactly as the dense network's step moves it."""
    net, _, _, opt, x = _cut_toy(res_scale=1.0, gamma_low=1.0, gamma_high=1.0)
    opt.zero_grad()
    net(x).square().mean().backward()
    opt.step()  # the dense reference step
    after_dense = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}

    # The same network and state (same seeds), cut before that step.
    net2, topo2, pruned2, opt2, _ = _cut_toy(res_scale=1.0, gamma_low=1.0, gamma_high=1.0)
    snap2 = optim_state.snapshot(opt2, net2)
    cuts = {}
    prune(net2, pruned2, topo2, record=cuts)
    new = torch.optim.Adam(net2.parameters(), lr=1e-3)
    carried, dropped = optim_state.carried_state(snap2, net2, cuts)
    assert not dropped
    assert optim_state.load_carried(new, net2, carried) == sum(1 for _ in net2.parameters())
    new.zero_grad()
    net2(x).square().mean().backward()
    new.step()
    for name, p in net2.named_parameters():
        path, _, leaf = name.rpartition('.')
        ref = after_dense[name]
        if path in cuts:
            c = cuts[path]
            ref = ref.index_select(0, c.out)
            if leaf == 'weight':
                ref = ref.index_select(1, c.in_)
        torch.testing.assert_close(p.detach(), ref, rtol=0, atol=1e-12, msg=name)


def test_moments_are_sliced_and_rescaled_to_the_merged_gamma():
    net, topo, pruned, opt, _ = _cut_toy(res_scale=0.5, gamma_low=0.5, gamma_high=1.5)
    gammas = {k: g.detach().clone() for k, g in insert_scaling_factors(net, topo).items()}
    snap = optim_state.snapshot(opt, net)
    cuts = {}
    prune(net, pruned, topo, record=cuts)
    carried, _ = optim_state.carried_state(snap, net, cuts)
    path = 'trunk.main.2.0.conv2'  # output γ, input channels cut by conv1's S, and res_scale 0.5
    c = cuts[path]
    s_out = gammas[path][c.out] * 0.5
    old = snap[f'{path}.weight']
    want_m = old['exp_avg'][c.out][:, c.in_] / s_out.view(-1, 1, 1, 1)
    want_v = old['exp_avg_sq'][c.out][:, c.in_] / s_out.view(-1, 1, 1, 1) ** 2
    torch.testing.assert_close(carried[f'{path}.weight']['exp_avg'], want_m)
    torch.testing.assert_close(carried[f'{path}.weight']['exp_avg_sq'], want_v)
    assert torch.equal(carried[f'{path}.weight']['step'], old['step'])
    bias = snap[f'{path}.bias']
    torch.testing.assert_close(carried[f'{path}.bias']['exp_avg'], bias['exp_avg'][c.out] / s_out)
    # conv1@in: the per-input-channel γ divides along dim 1.
    p1 = 'trunk.main.2.0.conv1'
    c1 = cuts[p1]
    s = gammas[p1][c1.out].view(-1, 1, 1, 1) * gammas[p1 + '@in'][c1.in_].view(1, -1, 1, 1)
    old1 = snap[f'{p1}.weight']['exp_avg']
    torch.testing.assert_close(carried[f'{p1}.weight']['exp_avg'], old1[c1.out][:, c1.in_] / s)
    # Untouched parameters keep their state as it was; the γ have none left.
    assert 'trunk.main.0' not in cuts  # the trunk's input conv writes the skip path: never cut
    assert torch.equal(carried['trunk.main.0.weight']['exp_avg_sq'], snap['trunk.main.0.weight']['exp_avg_sq'])
    assert not any(k.endswith(('ssl_gamma', 'ssl_gamma_in')) for k in carried)


def test_unknown_optimizer_state_is_reported_not_guessed():
    net = build('BasicVSR', 8, 1)
    topo = describe(net)
    insert_scaling_factors(net, topo)
    pruned = select_unimportant(l1_scores(net, topo), 0.5, 'local')
    opt = torch.optim.Adagrad(net.parameters(), lr=0.1)
    net(clip('BasicVSR')).mean().backward()
    opt.step()
    snap = optim_state.snapshot(opt, net)
    cuts = {}
    prune(net, pruned, topo, record=cuts)
    carried, dropped = optim_state.carried_state(snap, net, cuts)
    assert dropped and all(d.endswith(':sum') for d in dropped)
    assert 'spynet.basic_module.0.basic_module.0.weight' in carried  # untouched: carried whole


@pytest.mark.parametrize('arch', ['BasicVSR', 'BasicVSRNet'])
def test_every_parameter_of_a_pruned_host_network_gets_its_state(arch):
    net = build(arch, 8, 1)
    topo = describe(net)
    gammas = insert_scaling_factors(net, topo)
    pruned = select_unimportant(l1_scores(net, topo), 0.5, 'global')
    opt = _adam_trained(net, gammas, clip(arch), steps=1)
    snap = optim_state.snapshot(opt, net)
    cuts = {}
    prune(net, pruned, topo, record=cuts)
    new = torch.optim.Adam(net.parameters())
    carried, dropped = optim_state.carried_state(snap, net, cuts)
    assert not dropped and optim_state.load_carried(new, net, carried) == sum(1 for _ in net.parameters())
    for p in net.parameters():
        assert new.state[p]['exp_avg'].shape == p.shape
