"""Topology: what the engine reads from each supported network's module tree, and the public API for new ones."""
from __future__ import annotations

import pytest
import torch
from engine_helpers import HOST_ARCHS, TOY_QUALNAME, ToyUniVSR, build, describe_toy
from torch import nn

from ssl_plugin.core import PixelShuffleUnit, PlainUnit, ResidualUnit, describe, register_topology, supported
from ssl_plugin.core.surgery import key_size

# Where each host keeps its trunks' residual blocks and its reconstruction convs.
TRUNKS = {
    'BasicVSR': ('backward_trunk', 'forward_trunk'),
    'IconVSR': ('backward_trunk', 'forward_trunk'),
    'BasicVSRNet': ('backward_resblocks', 'forward_resblocks'),
    'BasicVSRUni': ('forward_trunk',),
}
CHAIN = {  # (path, is pixel shuffle) of the prunable reconstruction convs, in order
    'BasicVSR': (('fusion', False), ('upconv1', True), ('upconv2', True), ('conv_hr', False)),
    'IconVSR': (('upconv1', True), ('upconv2', True), ('conv_hr', False)),
    'BasicVSRNet': (('fusion', False), ('upsample1.upsample_conv', True), ('upsample2.upsample_conv', True),
                    ('conv_hr', False)),
    'BasicVSRUni': (('upconv1', True), ('upconv2', True), ('conv_hr', False)),
}
SIZES = [(8, 1), (16, 3)]


@pytest.mark.parametrize('feat,blocks', SIZES)
@pytest.mark.parametrize('arch', HOST_ARCHS)
def test_units_follow_the_module_tree(arch, feat, blocks):
    net = build(arch, feat, blocks)
    topo = describe(net)
    assert topo.arch == arch
    res = [u for u in topo.units if isinstance(u, ResidualUnit)]
    assert [u.path for u in res] == [f'{t}.main.2.{i}' for t in TRUNKS[arch] for i in range(blocks)]
    assert set(topo.hidden.values()) == set(TRUNKS[arch])
    chain = [u for u in topo.units if not isinstance(u, ResidualUnit)]
    assert [(u.path, isinstance(u, PixelShuffleUnit)) for u in chain] == list(CHAIN[arch])
    for u, nxt in zip(chain, [*chain[1:], None]):
        assert [c.path for c in u.consumers] == [nxt.path if nxt else 'conv_last']
        if isinstance(u, PixelShuffleUnit):
            assert u.scale == 2
    # Sizes of every key come from the convs: residual keys have the trunk width.
    for u in res:
        for k in u.keys:
            assert key_size(net, topo, k) == feat
    first_ps = next(u for u in chain if isinstance(u, PixelShuffleUnit))
    assert key_size(net, topo, first_ps.path) == net.get_submodule(first_ps.path).out_channels // 4 == feat
    # Never pruned: flow network, trunks' input convs and the RGB conv produce no key.
    keys = topo.keys()
    assert len(keys) == 3 * len(res) + len(chain)
    assert not any(k.startswith(('spynet', 'edvr', 'conv_last')) or '.main.0' in k for k in keys)
    assert 'spynet' in topo.frozen and 'conv_last' in topo.frozen


def test_scale_is_read_from_the_tree():
    # basicsr's BasicVSR builds its shuffle as nn.PixelShuffle(2): another module there gives another unit scale.
    net = build('BasicVSR', 8, 1)
    net.pixel_shuffle = nn.PixelShuffle(3)
    assert {u.scale for u in describe(net).units if isinstance(u, PixelShuffleUnit)} == {3}
    mm = build('BasicVSRNet', 8, 1)
    mm.upsample2.scale_factor = 4
    assert [u.scale for u in describe(mm).units if isinstance(u, PixelShuffleUnit)] == [2, 4]
    toy = ToyUniVSR(num_feat=6, num_block=2, scale=3)
    ps = [u for u in describe(toy).units if isinstance(u, PixelShuffleUnit)]
    assert [u.scale for u in ps] == [3]
    assert key_size(toy, describe(toy), ps[0].path) == 6


def test_iconvsr_keyframe_parts_are_not_prunable():
    topo = describe(build('IconVSR', 8, 1))
    assert not any(k.startswith(('edvr', 'backward_fusion', 'forward_fusion')) for k in topo.keys())
    assert {'edvr', 'backward_fusion', 'forward_fusion'} <= set(topo.frozen)


def test_unsupported_network_names_the_supported_ones_and_the_api():
    with pytest.raises(TypeError) as e:
        describe(nn.Sequential(nn.Conv2d(3, 3, 3)))
    msg = str(e.value)
    assert 'Sequential' in msg and 'register_topology' in msg
    for name in ('basicsr.archs.basicvsr_arch.BasicVSR', 'basicsr.archs.basicvsr_arch.IconVSR',
                 'mmagic.models.editors.basicvsr.basicvsr_net.BasicVSRNet'):
        assert name in msg and name in supported()


def test_subclass_of_a_supported_network_is_described():
    from basicsr.archs.basicvsr_arch import BasicVSR

    class MyBasicVSR(BasicVSR):
        pass

    torch.manual_seed(0)
    assert describe(MyBasicVSR(num_feat=8, num_block=1)).arch == 'BasicVSR'


def test_wrapped_network_is_described_through_its_module():
    net = build('BasicVSR', 8, 1)
    assert describe(nn.DataParallel(net)).keys() == describe(net).keys()


def test_custom_topology_via_register_topology():
    assert TOY_QUALNAME in supported()
    topo = describe(ToyUniVSR(num_feat=5, num_block=2))
    assert topo.arch == 'ToyUniVSR' and topo.hidden == {'forward': 'trunk'}
    assert [type(u) for u in topo.units] == [ResidualUnit, ResidualUnit, PlainUnit, PixelShuffleUnit, PlainUnit]
    # Registering the same describer again is harmless; another describer for the same class is refused.
    register_topology(TOY_QUALNAME)(describe_toy)
    with pytest.raises(ValueError, match='already registered'):
        register_topology(TOY_QUALNAME)(lambda net: describe_toy(net))


def test_residual_units_refuse_a_container_without_blocks():
    from ssl_plugin.core import residual_units
    net = ToyUniVSR(num_feat=4, num_block=1)
    with pytest.raises(TypeError, match='not a residual block'):
        residual_units(net, 'trunk.main')
    with pytest.raises(KeyError, match='no submodule'):
        residual_units(net, 'trunk.nothing')
