"""Residual Sparsity Connection (RSC): a pruned residual block that keeps the width of its skip path.

``y = x`` with ``conv2(act(conv1(x[:, in_idx])))`` added into channels ``out_idx`` only. The block reads the kept input
channels and writes the kept output channels of the untouched skip path, so the hidden state of a recurrent trunk keeps
its width and channel order (which is also what lets Temporal Finetuning compare it with the unpruned one directly).
Index tensors are buffers: they follow the module's device and are saved in its state dict.

Layout: in the default (NCHW) format a channel is one contiguous plane, so the gather / scatter are plane copies. In
``channels_last`` a channel is a strided column; ``index_select`` / ``index_add_`` on dim 1 then take ~10 ms each at
180x320 (longer than the block's two convs, ~7x the row-wise version), so the block views the tensor as a
(pixels, channels) matrix and gathers / scatters whole rows at a time, and its output stays ``channels_last``.

In place: without autograd (validation, inference) a block built with ``inplace=True`` adds its residual into ``x``
itself, saving a full-width copy per block. That is only correct when nothing else reads ``x`` afterwards, which the
network's topology declares (:attr:`~.topology.ResidualUnit.inplace_safe`, set by the shipped topologies, off by default
for a user's); surgery carries it here. A forward hook or pre-hook on the block itself (which would see its input
overwritten by the output) also turns it off. With autograd on, everything is out of place.
"""
from __future__ import annotations

import torch
from torch import nn


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """The (pixels, channels) view of a channels_last NCHW tensor (a copy only if ``x`` is not channels_last)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n, _, h, w = like.shape
    return rows.view(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)


class RSCBlock(nn.Module):

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, act: nn.Module, in_idx: torch.Tensor,
                 out_idx: torch.Tensor, width: int, inplace: bool = False):
        super().__init__()
        self.conv1, self.conv2, self.relu = conv1, conv2, act
        self.width = int(width)
        self.inplace = bool(inplace)  # a plain attribute: not in the state dict, derived from the topology
        self.register_buffer('in_idx', in_idx.to(device=conv1.weight.device, dtype=torch.int64))
        self.register_buffer('out_idx', out_idx.to(device=conv2.weight.device, dtype=torch.int64))
        # Fast paths: a side that keeps every channel needs no gather / scatter.
        self.reads_all = self.in_idx.numel() == self.width
        self.writes_all = self.out_idx.numel() == self.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scatter(x, self.conv2(self.relu(self.conv1(self.gather(x)))))

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The kept input channels ``x[:, in_idx]``, in the layout of ``x``."""
        if self.reads_all:
            return x
        if _is_channels_last(x):
            rows = _rows(x)
            return _from_rows(rows.gather(1, self.in_idx.expand(rows.shape[0], -1)), x)
        if x.shape[0] == 1 and x.is_contiguous():
            # One clip: the channel planes are the rows of a (channels, pixels) matrix, and index_select on dim 0
            # copies whole rows (~20 % faster than the same gather on dim 1 of the 4-D tensor at 180x320).
            return x.view(x.shape[1], -1).index_select(0, self.in_idx).view(1, -1, *x.shape[2:])
        return x.index_select(1, self.in_idx)

    def writes_in_place(self) -> bool:
        """Whether :meth:`scatter` may overwrite its input now (see the module docstring)."""
        return (self.inplace and not torch.is_grad_enabled()
                and not (self._forward_hooks or self._forward_pre_hooks))

    def scatter(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``x`` with ``r`` added into channels ``out_idx`` (in place on ``x`` when :meth:`writes_in_place`)."""
        inplace = self.writes_in_place()
        if self.writes_all:
            return x.add_(r) if inplace else x + r
        if _is_channels_last(x):
            rows = _rows(x)
            if not inplace:
                return _from_rows(rows.index_add(1, self.out_idx, _rows(r)), x)
            rows.index_add_(1, self.out_idx, _rows(r))
            return x
        return x.index_add_(1, self.out_idx, r) if inplace else x.index_add(1, self.out_idx, r)

    def extra_repr(self) -> str:
        return (f'reads {self.in_idx.numel()}/{self.width}, writes {self.out_idx.numel()}/{self.width}'
                + (', in place without autograd' if self.inplace else ''))
