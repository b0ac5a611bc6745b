"""Modulated deformable convolution (DCNv2) with mmcv's interface, on ``torchvision.ops.deform_conv2d``.

Why: MMagic's BasicVSR++, EDVR and IconVSR subclass ``mmcv.ops.ModulatedDeformConv2d`` and call
``mmcv.ops.modulated_deform_conv2d``, which exist only in mmcv built with compiled ops; no such build exists for the
pinned torch. torchvision ships the same operator (same offset layout: per deformable group, per kernel tap, a
(dy, dx) pair; mask per group and tap; bilinear sampling, zero outside the frame), with forward and backward on CPU
and CUDA. This module gives it mmcv's names, signature, attributes, parameters and initialisation, so MMagic's
subclasses build unchanged and its checkpoints load strictly.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn.modules.utils import _pair, _single
from torchvision.ops import deform_conv2d as _tv_deform_conv2d

__all__ = ['ModulatedDeformConv2d', 'ModulatedDeformConv2dPack', 'modulated_deform_conv2d']


def modulated_deform_conv2d(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1,
                            deform_groups: int = 1) -> torch.Tensor:
    """mmcv's ``modulated_deform_conv2d(input, offset, mask, weight, bias, stride, padding, dilation, groups,
    deform_groups)``. torchvision infers ``groups`` and ``deform_groups`` from the tensor shapes, so they are checked
    here against the shapes instead of being passed on (a mismatch would silently mean another convolution)."""
    if input.dim() != 4:
        raise ValueError(f'modulated_deform_conv2d: input must be (N, C, H, W), got shape {tuple(input.shape)}')
    kh, kw = weight.shape[-2:]
    c_in = input.shape[1]
    if groups < 1 or deform_groups < 1:
        raise ValueError(f'modulated_deform_conv2d: groups ({groups}) and deform_groups ({deform_groups}) must be >= 1')
    if weight.shape[1] * groups != c_in:
        raise ValueError(f'modulated_deform_conv2d: weight {tuple(weight.shape)} with groups={groups} expects '
                         f'{weight.shape[1] * groups} input channels, the input has {c_in}')
    if weight.shape[0] % groups:
        raise ValueError(f'modulated_deform_conv2d: {weight.shape[0]} output channels are not divisible by '
                         f'groups={groups}')
    if c_in % deform_groups:
        raise ValueError(f'modulated_deform_conv2d: {c_in} input channels are not divisible by '
                         f'deform_groups={deform_groups}')
    taps = deform_groups * kh * kw
    if offset.shape[1] != 2 * taps:
        raise ValueError(f'modulated_deform_conv2d: offset has {offset.shape[1]} channels, deform_groups='
                         f'{deform_groups} with a {kh}x{kw} kernel needs {2 * taps}')
    if mask.shape[1] != taps:
        raise ValueError(f'modulated_deform_conv2d: mask has {mask.shape[1]} channels, deform_groups='
                         f'{deform_groups} with a {kh}x{kw} kernel needs {taps}')
    input = input.type_as(offset)  # as mmcv: the offset's dtype decides
    return _tv_deform_conv2d(input, offset, weight.type_as(input), None if bias is None else bias.type_as(input),
                             stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation),
                             mask=mask.type_as(input))


class ModulatedDeformConv2d(nn.Module):
    """mmcv's ``ModulatedDeformConv2d``: ``forward(x, offset, mask)``; parameters ``weight`` (out, in / groups, kh, kw)
    and ``bias`` (or None), drawn as mmcv draws them."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, deform_groups: int = 1, bias: bool = True, **kwargs):
        if 'deformable_groups' in kwargs:  # mmcv's deprecated spelling (BasicSR's DCN uses it too)
            warnings.warn('"deformable_groups" is deprecated in ModulatedDeformConv2d, use "deform_groups"',
                          DeprecationWarning, stacklevel=2)
            deform_groups = kwargs.pop('deformable_groups')
        if kwargs:
            raise TypeError(f'ModulatedDeformConv2d got unexpected arguments {sorted(kwargs)}')
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'ModulatedDeformConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) '
                             f'must be divisible by groups ({groups})')
        if in_channels % deform_groups:
            raise ValueError(f'ModulatedDeformConv2d: in_channels ({in_channels}) must be divisible by '
                             f'deform_groups ({deform_groups})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        # nn.Conv2d's attributes, which mmcv sets too (code that inspects convs reads them)
        self.transposed = False
        self.output_padding = _single(0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter('bias', None)
        self.init_weights()

    def init_weights(self) -> None:
        # mmcv: U(-1/sqrt(n), 1/sqrt(n)) with n = in_channels * kh * kw (not / groups), zero bias.
        stdv = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        with torch.no_grad():
            self.weight.uniform_(-stdv, stdv)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return modulated_deform_conv2d(x, offset, mask, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation, self.groups, self.deform_groups)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, dilation={self.dilation}, groups={self.groups}, '
                f'deform_groups={self.deform_groups}, bias={self.bias is not None}')


class ModulatedDeformConv2dPack(ModulatedDeformConv2d):
    """mmcv's ``ModulatedDeformConv2dPack``: offsets and mask come from ``conv_offset`` on the input itself
    (zero-initialised, so a fresh layer starts as a plain convolution with mask 0.5)."""

    _version = 2  # mmcv's: saved in the state dict's metadata like mmcv's own

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kh, kw = self.kernel_size
        self.conv_offset = nn.Conv2d(self.in_channels, self.deform_groups * 3 * kh * kw, kernel_size=self.kernel_size,
                                     stride=self.stride, padding=self.padding, dilation=self.dilation, bias=True)
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        if hasattr(self, 'conv_offset'):
            with torch.no_grad():
                self.conv_offset.weight.zero_()
                self.conv_offset.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1, o2, mask = torch.chunk(self.conv_offset(x), 3, dim=1)
        return modulated_deform_conv2d(x, torch.cat((o1, o2), dim=1), torch.sigmoid(mask), self.weight, self.bias,
                                       self.stride, self.padding, self.dilation, self.groups, self.deform_groups)
