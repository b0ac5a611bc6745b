"""Topologies of the supported networks, read from their module trees (widths, depths and scales are never literals).

Never pruned: the optical-flow network (SPyNet), the EDVR keyframe extractor and keyframe fusions of IconVSR (they write
the hidden state), BasicVSR++'s deformable alignment, each trunk's input conv (it writes the skip path that RSC keeps
whole) and the last conv (RGB out). Method ``aligned`` prunes the skip path itself: each trunk is declared as an
aligned group with the convs outside it that read its hidden state (IconVSR declares none: its keyframe fusions read
and write the hidden state too; BasicVSR++ none yet: its alignment reads every branch's state).
"""
from __future__ import annotations

from .registry import register_topology
from .topology import Topology, aligned_group, get_module, reconstruction_chain, residual_units


def _shuffle_scale(module) -> int:
    """Upscale factor of an nn.PixelShuffle (BasicSR) or of mmagic's PixelShufflePack."""
    for attr in ('upscale_factor', 'scale_factor'):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    raise TypeError(f'{type(module).__name__} has no pixel-shuffle scale')


def _trunk_blocks(net, trunk: str) -> str:
    # Sequential(conv_in, act, Sequential(blocks...)): the residual blocks are the last child.
    main = get_module(net, f'{trunk}.main')
    return f'{trunk}.main.{len(main) - 1}'


def _recurrent(net, arch, trunks: dict[str, str], chain, frozen, readers: dict[str, list] | None = None,
               width_attr: str = '') -> Topology:
    # In-place safe: the blocks' Sequential reads the fresh output of the trunk's input conv + in-place LeakyReLU
    # (nothing else holds it), each block reads its predecessor's output alone, and the trunk's output (the last
    # block's, which the caller and a HiddenStateRecorder on the trunk keep) is the input of no block.
    # ``readers``: per trunk, the (conv, input offset) pairs outside it that read its hidden state (aligned groups).
    units, groups = [], []
    for trunk in trunks.values():
        blocks = residual_units(net, _trunk_blocks(net, trunk), inplace_safe=True)
        units += blocks
        if readers is not None:
            groups.append(aligned_group(net, trunk, f'{trunk}.main.0', blocks, readers[trunk], width_attr))
    units += reconstruction_chain(net, chain)
    return Topology(arch=arch, units=tuple(units), hidden=dict(trunks), frozen=tuple(frozen), groups=tuple(groups))


def _fusion_readers(net, backward: str, forward: str, fusion: str = 'fusion') -> dict[str, list]:
    # The fusion conv reads cat([backward hidden state, forward hidden state]).
    width = get_module(net, f'{backward}.main.0').out_channels
    return {backward: [(fusion, 0)], forward: [(fusion, width)]}


def _basicsr_chain(net, first: list[str]):
    r = _shuffle_scale(net.pixel_shuffle)
    return [(p, None) for p in first] + [('upconv1', r), ('upconv2', r), ('conv_hr', None), ('conv_last', None)]


@register_topology('basicsr.archs.basicvsr_arch.BasicVSR')
def basicsr_basicvsr(net) -> Topology:
    return _recurrent(net, 'BasicVSR', {'backward': 'backward_trunk', 'forward': 'forward_trunk'},
                      _basicsr_chain(net, ['fusion']),
                      ['spynet', 'backward_trunk.main.0', 'forward_trunk.main.0', 'conv_last'],
                      _fusion_readers(net, 'backward_trunk', 'forward_trunk'), 'num_feat')


@register_topology('basicsr.archs.basicvsr_arch.IconVSR')
def basicsr_iconvsr(net) -> Topology:
    # upconv1 reads the forward hidden state directly, so the chain starts there.
    return _recurrent(net, 'IconVSR', {'backward': 'backward_trunk', 'forward': 'forward_trunk'},
                      _basicsr_chain(net, []),
                      ['spynet', 'edvr', 'backward_fusion', 'forward_fusion', 'backward_trunk.main.0',
                       'forward_trunk.main.0', 'conv_last'])


@register_topology('ssl_plugin.archs.basicvsr_uni_arch.BasicVSRUni')
def basicvsr_uni(net) -> Topology:
    # upconv1 reads the hidden state directly.
    return _recurrent(net, 'BasicVSRUni', {'forward': 'forward_trunk'}, _basicsr_chain(net, []),
                      ['spynet', 'forward_trunk.main.0', 'conv_last'], {'forward_trunk': [('upconv1', 0)]}, 'num_feat')


@register_topology('mmagic.models.editors.basicvsr.basicvsr_net.BasicVSRNet')
def mmagic_basicvsr_net(net) -> Topology:
    r1, r2 = _shuffle_scale(net.upsample1), _shuffle_scale(net.upsample2)
    chain = [('fusion', None), ('upsample1.upsample_conv', r1), ('upsample2.upsample_conv', r2),
             ('conv_hr', None), ('conv_last', None)]
    return _recurrent(net, 'BasicVSRNet', {'backward': 'backward_resblocks', 'forward': 'forward_resblocks'}, chain,
                      ['spynet', 'backward_resblocks.main.0', 'forward_resblocks.main.0', 'conv_last'],
                      _fusion_readers(net, 'backward_resblocks', 'forward_resblocks'), 'mid_channels')


def _blocks_with_input_conv(net, path: str) -> str:
    """Path of the ConvResidualBlocks / ResidualBlocksWithInputConv at ``path``, or inside the Sequential there
    (BasicVSR++'s feature extractor for full-resolution input: strided convs, then the blocks module last)."""
    module = get_module(net, path)
    return path if hasattr(module, 'main') else f'{path}.{len(module) - 1}'


def _basicvsrpp(net, arch: str, chain) -> Topology:
    """BasicVSR++ (both hosts): residual blocks of the feature extractor, of the four second-order propagation
    backbones and of the reconstruction block through RSC, then the upsampling chain.

    Each backbone computes the *update* of its branch's state (``feat_prop = feat_prop + backbone(cat([...,
    feat_prop]))``), hence ``hidden_residual``. Never pruned: SPyNet, the deformable alignment (its offset convs read
    the hidden states and the flows, and its DCN writes the aligned state: both keep their widths thanks to RSC),
    the input conv of every blocks module (it writes the skip path) and conv_last. All four blocks modules are
    in-place safe: their input is a fresh conv + in-place LeakyReLU output, and their output (the last block's) is
    the input of no block.
    """
    branches = list(net.backbone.keys())
    extract = _blocks_with_input_conv(net, 'feat_extract')
    trunks = [extract] + [f'backbone.{b}' for b in branches] + ['reconstruction']
    units = []
    for trunk in trunks:
        units += residual_units(net, _trunk_blocks(net, trunk), inplace_safe=True)
    units += reconstruction_chain(net, chain)
    frozen = ['spynet', 'deform_align', *(f'{t}.main.0' for t in trunks), 'conv_last']
    return Topology(arch=arch, units=tuple(units), hidden={b: f'backbone.{b}' for b in branches},
                    frozen=tuple(frozen), hidden_residual=tuple(branches))


@register_topology('basicsr.archs.basicvsrpp_arch.BasicVSRPlusPlus')
def basicsr_basicvsrpp(net) -> Topology:
    # BasicSR leaves out the deformable alignment when CUDA is unavailable at construction (deform_align is then
    # empty): the prunable units are the same in both forms.
    r = _shuffle_scale(net.pixel_shuffle)
    return _basicvsrpp(net, 'BasicVSRPlusPlus',
                       [('upconv1', r), ('upconv2', r), ('conv_hr', None), ('conv_last', None)])


@register_topology('mmagic.models.editors.basicvsr_plusplus_net.basicvsr_plusplus_net.BasicVSRPlusPlusNet')
def mmagic_basicvsrpp_net(net) -> Topology:
    r1, r2 = _shuffle_scale(net.upsample1), _shuffle_scale(net.upsample2)
    return _basicvsrpp(net, 'BasicVSRPlusPlusNet',
                       [('upsample1.upsample_conv', r1), ('upsample2.upsample_conv', r2), ('conv_hr', None),
                        ('conv_last', None)])
