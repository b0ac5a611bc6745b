"""Shared builders for the engine tests: tiny host networks in float64, random clips, γ patterns and a toy topology.

Nets are tiny (a few channels, one or two blocks) and clips short, because every BasicSR / MMagic forward runs SPyNet;
36 px is about the smallest LR size their SPyNets accept. float64 makes "pruned == unpruned" an exact check.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ssl_plugin  # noqa: F401  (applies the host compatibility shims before any host import)
from ssl_plugin.core import (
    describe,
    insert_scaling_factors,
    l1_scores,
    prune,
    register_topology,
    residual_units,
    select_unimportant,
)
from ssl_plugin.core.topology import Topology, reconstruction_chain

DTYPE = torch.float64
LR_SIZE = 36
EXACT = 1e-10

#: arch name -> (module, class, width kwarg, depth kwarg, frames a forward needs)
HOSTS = {
    'BasicVSR': ('basicsr.archs.basicvsr_arch', 'BasicVSR', 'num_feat', 'num_block', 2),
    # IconVSR pads the clip with frames 3/4 and -4/-5 around its keyframes: it needs at least 5 frames.
    'IconVSR': ('basicsr.archs.basicvsr_arch', 'IconVSR', 'num_feat', 'num_block', 5),
    'BasicVSRNet': ('mmagic.models.editors', 'BasicVSRNet', 'mid_channels', 'num_blocks', 2),
    'BasicVSRUni': ('ssl_plugin.archs.basicvsr_uni_arch', 'BasicVSRUni', 'num_feat', 'num_block', 2),
    'ToyUniVSR': (__name__, 'ToyUniVSR', 'num_feat', 'num_block', 2),
}
HOST_ARCHS = ('BasicVSR', 'IconVSR', 'BasicVSRNet', 'BasicVSRUni')


def host_class(arch: str):
    """The network class, or a pytest skip when its module is not available (yet)."""
    module, cls, *_ = HOSTS[arch]
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        pytest.skip(f'{arch} is not available: {e}')


def build(arch: str, feat: int = 8, blocks: int = 1, seed: int = 0, dtype=DTYPE, **kwargs) -> nn.Module:
    """A freshly initialised ``arch`` of the given width/depth (deterministic given ``seed``)."""
    cls = host_class(arch)
    _, _, width_kw, depth_kw, _ = HOSTS[arch]
    torch.manual_seed(seed)
    net = cls(**{width_kw: feat, depth_kw: blocks}, **kwargs).to(dtype)
    for name in ('spynet', 'edvr'):
        if hasattr(net, name):
            _run_in_float32(getattr(net, name))
    return net


def _cast_in(module, args):
    module._io_dtype = args[0].dtype
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if torch.is_tensor(a) else a for a in args)


def _cast_out(module, args, output):
    return output.to(module._io_dtype)


def _run_in_float32(module: nn.Module) -> None:
    """Run a never-pruned part (SPyNet, IconVSR's EDVR) in float32 inside a float64 network: float64 convs are
    several times slower on CPU, and the parts under test only need the same flows / keyframe features in the
    networks they compare (CPU convs are deterministic). The module's code and state-dict keys stay the host's."""
    module.float()
    module.register_forward_pre_hook(_cast_in)
    module.register_forward_hook(_cast_out)


def frames(arch: str) -> int:
    return HOSTS[arch][4]


def clip(arch: str, batch: int = 1, seed: int = 1, size: int = LR_SIZE, dtype=DTYPE, n: int | None = None):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n or frames(arch), 3, size, size, generator=g, dtype=dtype)


@torch.no_grad()
def run(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(x)


@torch.no_grad()
def set_gammas(gammas: dict, pruned: dict, seed: int = 2, low: float = 0.5, high: float = 1.5) -> None:
    """Random γ in [low, high] everywhere, exactly 0 on the unimportant set S (the state SIR drives towards)."""
    g = torch.Generator().manual_seed(seed)
    for key, gamma in gammas.items():
        values = torch.rand(gamma.shape, generator=g, dtype=torch.float64) * (high - low) + low
        idx = pruned.get(key)
        if idx is not None and idx.numel():
            values[idx] = 0
        gamma.copy_(values.to(gamma))


@torch.no_grad()
def randomize(net: nn.Module, seed: int = 3, std: float = 0.05) -> None:
    """Redraw every weight outside the flow / keyframe networks from one distribution, so that the host's init scale
    pattern (residual convs x0.1) does not decide alone which units the L1 criterion picks: S then spans residual,
    pixel-shuffle and plain units alike."""
    g = torch.Generator().manual_seed(seed)
    for name, p in net.named_parameters():
        if not name.startswith(('spynet.', 'edvr.')):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) * std)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


# -- a custom architecture, described through the public register_topology API -----------------------------------


class ToyBlock(nn.Module):
    """A residual block with a residual scale, like EDSR's (BasicVSR's blocks all use res_scale 1)."""

    def __init__(self, feat: int, res_scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class ToyTrunk(nn.Module):

    def __init__(self, in_ch: int, feat: int, blocks: int, res_scale: float):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(in_ch, feat, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
                                  nn.Sequential(*[ToyBlock(feat, res_scale) for _ in range(blocks)]))

    def forward(self, x):
        return self.main(x)


class ToyUniVSR(nn.Module):
    """Forward-only recurrent SR toy without optical flow (cheap): trunk(cat(frame, hidden)) per frame, then a
    1x1 fusion, an r x pixel-shuffle conv, a plain conv and an RGB conv."""

    def __init__(self, num_feat: int = 8, num_block: int = 1, scale: int = 2, hr_feat: int = 6,
                 res_scale: float = 0.5):
        super().__init__()
        self.num_feat, self.scale = num_feat, scale
        self.trunk = ToyTrunk(num_feat + 3, num_feat, num_block, res_scale)
        self.fusion = nn.Conv2d(num_feat, num_feat, 1)
        self.upconv = nn.Conv2d(num_feat, hr_feat * scale * scale, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(scale)
        self.conv_hr = nn.Conv2d(hr_feat, hr_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(hr_feat, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x):
        b, n, _, h, w = x.shape
        hidden = x.new_zeros(b, self.num_feat, h, w)
        outs = []
        for i in range(n):
            hidden = self.trunk(torch.cat([x[:, i], hidden], 1))
            out = self.lrelu(self.fusion(hidden))
            out = self.lrelu(self.shuffle(self.upconv(out)))
            out = self.conv_last(self.lrelu(self.conv_hr(out)))
            outs.append(out + F.interpolate(x[:, i], scale_factor=self.scale, mode='bilinear', align_corners=False))
        return torch.stack(outs, 1)


TOY_QUALNAME = f'{ToyUniVSR.__module__}.{ToyUniVSR.__qualname__}'


@register_topology(TOY_QUALNAME)
def describe_toy(net: ToyUniVSR) -> Topology:
    units = residual_units(net, 'trunk.main.2')
    units += reconstruction_chain(net, [('fusion', None), ('upconv', net.shuffle.upscale_factor), ('conv_hr', None),
                                        ('conv_last', None)])
    return Topology(arch='ToyUniVSR', units=tuple(units), hidden={'forward': 'trunk'},
                    frozen=('trunk.main.0', 'conv_last'))



@dataclass
class Case:
    """One pruned network and everything a test compares it with."""
    arch: str
    feat: int
    blocks: int
    net: nn.Module  # pruned, in place
    topology: Topology
    pruned: dict
    spec: dict
    x: torch.Tensor
    y_ref: torch.Tensor  # unpruned network, γ of S exactly 0
    y_pruned: torch.Tensor
    dense_state: dict  # the unpruned network's state dict, γ included


def make_case(arch: str, feat: int, blocks: int, ratio: float, scope: str = 'global', align: int = 1,
              seed: int = 0) -> Case:
    net = build(arch, feat, blocks, seed=seed)
    randomize(net, seed=seed + 1)
    topology = describe(net)
    gammas = insert_scaling_factors(net, topology)
    pruned = select_unimportant(l1_scores(net, topology), ratio, scope, align)
    set_gammas(gammas, pruned, seed=seed + 2)
    x = clip(arch, seed=seed + 3)
    y_ref = run(net, x)
    dense_state = {k: v.clone() for k, v in net.state_dict().items()}
    spec = prune(net, pruned, topology)
    return Case(arch, feat, blocks, net, topology, pruned, spec, x, y_ref, run(net, x), dense_state)
