"""Scaling factors γ: inserted by hooks without renaming state-dict keys, saved with the model, exact at γ = 1."""
from __future__ import annotations

import pytest
import torch
from engine_helpers import DTYPE, HOST_ARCHS, ToyUniVSR, build, clip, max_diff, run
from torch import nn

from ssl_plugin.core import (
    GAMMA_IN,
    GAMMA_OUT,
    PixelShuffleUnit,
    ResidualUnit,
    describe,
    insert_scaling_factors,
    merge_scaling_factors,
    scaling_factors,
)


def gamma_keys(net):
    return {k for k in net.state_dict() if k.endswith((GAMMA_OUT, GAMMA_IN))}


@pytest.mark.parametrize('arch', HOST_ARCHS)
def test_stock_state_dict_loads_strictly_before_and_after_insertion(arch):
    stock = build(arch, 8, 2, seed=0).state_dict()
    net = build(arch, 8, 2, seed=5)
    net.load_state_dict(stock, strict=True)
    topo = describe(net)
    gammas = insert_scaling_factors(net, topo)
    with torch.no_grad():
        for g in gammas.values():
            g.fill_(0.25)
    # Every stock key keeps its name; γ only adds keys.
    assert set(net.state_dict()) == set(stock) | gamma_keys(net)
    assert len(gamma_keys(net)) == len(topo.keys())
    net.load_state_dict(stock, strict=True)  # a checkpoint without γ: γ keeps its value
    for k, v in stock.items():
        assert torch.equal(net.state_dict()[k], v), k
    assert all(bool((g == 0.25).all()) for g in scaling_factors(net, topo).values())


def test_gamma_is_saved_and_restored_with_the_model(tmp_path):
    net = build('BasicVSR', 8, 1)
    topo = describe(net)
    with torch.no_grad():
        for g in insert_scaling_factors(net, topo).values():
            g.uniform_(0, 2)
    torch.save(net.state_dict(), tmp_path / 'net.pth')
    fresh = build('BasicVSR', 8, 1, seed=9)
    insert_scaling_factors(fresh, topo)
    fresh.load_state_dict(torch.load(tmp_path / 'net.pth', weights_only=True), strict=True)
    for key, g in scaling_factors(fresh, topo).items():
        assert torch.equal(g, scaling_factors(net, topo)[key]), key
    # A γ checkpoint does not load into a network without γ: the extra keys are reported.
    with pytest.raises(RuntimeError, match=GAMMA_OUT):
        build('BasicVSR', 8, 1).load_state_dict(net.state_dict(), strict=True)


@pytest.mark.parametrize('arch', ['BasicVSRUni', 'ToyUniVSR'])
def test_forward_unchanged_at_gamma_one(arch):
    net = build(arch, 8, 1)
    x = clip(arch)
    before = run(net, x)
    insert_scaling_factors(net, describe(net))
    assert max_diff(run(net, x), before) == 0.0


@pytest.mark.parametrize('arch', HOST_ARCHS + ('ToyUniVSR',))
def test_one_gamma_per_filter_input_channel_and_shuffle_group(arch):
    net = build(arch, 12, 2)
    topo = describe(net)
    gammas = insert_scaling_factors(net, topo)
    assert list(gammas) == topo.keys()
    for unit in topo.units:
        if isinstance(unit, ResidualUnit):
            c1, c2 = net.get_submodule(unit.conv1_path), net.get_submodule(unit.conv2_path)
            assert getattr(c1, GAMMA_IN).shape == (c1.in_channels,)
            assert getattr(c1, GAMMA_OUT).shape == (c1.out_channels,)
            assert getattr(c2, GAMMA_OUT).shape == (c2.out_channels,)
            assert not hasattr(c2, GAMMA_IN)
        else:
            conv = net.get_submodule(unit.path)
            r2 = unit.scale ** 2 if isinstance(unit, PixelShuffleUnit) else 1
            assert getattr(conv, GAMMA_OUT).shape == (conv.out_channels // r2,)
        for g in (gammas[k] for k in unit.keys):
            assert isinstance(g, nn.Parameter) and g.requires_grad and bool((g == 1).all())


def test_gamma_acts_where_documented():
    """Output γ scales the filter after its bias (per r*r group on a shuffle conv); input γ scales what conv1 reads."""
    net = ToyUniVSR(num_feat=4, num_block=1, scale=2, hr_feat=3).to(DTYPE)
    topo = describe(net)
    gammas = insert_scaling_factors(net, topo)
    x = torch.rand(1, 4, 5, 5, dtype=DTYPE)
    up = net.upconv
    with torch.no_grad():
        gammas['upconv'].copy_(torch.tensor([0.0, 2.0, 3.0], dtype=DTYPE))
        scale = torch.tensor([0.0, 2.0, 3.0], dtype=DTYPE).repeat_interleave(4).view(1, -1, 1, 1)
        assert max_diff(up(x), nn.functional.conv2d(x, up.weight, up.bias, padding=1) * scale) == 0
        c1 = net.trunk.main[2][0].conv1
        gin = torch.tensor([1.0, 0.0, 0.5, 2.0], dtype=DTYPE)
        gammas['trunk.main.2.0.conv1@in'].copy_(gin)
        gammas['trunk.main.2.0.conv1'].fill_(1)
        ref = nn.functional.conv2d(x * gin.view(1, -1, 1, 1), c1.weight, c1.bias, padding=1)
        assert max_diff(c1(x), ref) < 1e-14


def test_insertion_is_idempotent():
    net = build('BasicVSR', 8, 1)
    topo = describe(net)
    first = insert_scaling_factors(net, topo)
    n_params = sum(1 for _ in net.parameters())
    again = insert_scaling_factors(net, topo)
    assert all(first[k] is again[k] for k in first)
    assert sum(1 for _ in net.parameters()) == n_params
    for k in topo.keys():
        conv = net.get_submodule(k.removesuffix('@in'))
        assert len(conv._forward_hooks) <= 1 and len(conv._forward_pre_hooks) <= 1
        assert len(conv._load_state_dict_pre_hooks) == 1


def test_skip_keys_get_no_gamma():
    net = build('BasicVSR', 8, 2)
    topo = describe(net)
    skipped = topo.skipped_keys(['*.conv2', 'upconv1'])
    gammas = insert_scaling_factors(net, topo, skip_keys=skipped)
    assert set(gammas) == set(topo.keys()) - skipped and skipped
    assert not hasattr(net.upconv1, GAMMA_OUT)


def test_merge_keeps_the_function_and_removes_gamma():
    net = build('ToyUniVSR', 8, 2)
    topo = describe(net)
    with torch.no_grad():
        for g in insert_scaling_factors(net, topo).values():
            g.uniform_(0.2, 2.0)
    x = clip('ToyUniVSR', n=3)
    before = run(net, x)
    merge_scaling_factors(net, topo)
    assert not scaling_factors(net, topo) and not gamma_keys(net)
    assert max_diff(run(net, x), before) < 1e-12


def test_device_and_dtype_follow_the_network():
    net = ToyUniVSR(num_feat=4, num_block=1).to(torch.float64)
    gammas = insert_scaling_factors(net, describe(net))
    assert {g.dtype for g in gammas.values()} == {torch.float64}
    net.float()
    assert {g.dtype for g in scaling_factors(net, describe(net)).values()} == {torch.float32}
    assert net(torch.rand(1, 2, 3, 6, 6)).dtype == torch.float32
    # γ is created on the weights' device (meta stands in for an accelerator here).
    meta = ToyUniVSR(num_feat=4, num_block=1).to('meta')
    assert {g.device.type for g in insert_scaling_factors(meta, describe(meta)).values()} == {'meta'}


def test_insertion_through_a_wrapper_reaches_the_bare_network():
    net = build('BasicVSR', 8, 1)
    insert_scaling_factors(nn.DataParallel(net), describe(net))
    assert len(scaling_factors(net, describe(net))) == len(describe(net).keys())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_gamma_on_cuda():
    net = ToyUniVSR(num_feat=4, num_block=1).cuda()
    gammas = insert_scaling_factors(net, describe(net))
    assert {g.device.type for g in gammas.values()} == {'cuda'}
    assert net(torch.rand(1, 2, 3, 6, 6, device='cuda')).is_cuda
