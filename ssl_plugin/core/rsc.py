"""Residual Sparsity Connection (RSC): a pruned residual block that keeps the width of its skip path.

``y = x`` with ``conv2(act(conv1(x[:, in_idx])))`` added into channels ``out_idx`` only. The block reads the kept input
channels and writes the kept output channels of the untouched skip path, so the hidden state of a recurrent trunk keeps
its width and channel order (which is also what lets Temporal Finetuning compare it with the unpruned one directly).
Index tensors are buffers: they follow the module's device and are saved in its state dict.

Without autograd (validation, inference) the scatter-add writes into ``x`` in place, saving a full-width copy per block:
residual units are the children of a Sequential chain (see :func:`~.topology.residual_units`), so a block's input is
consumed by that block alone. With autograd on, everything is out of place.
"""
from __future__ import annotations

import torch
from torch import nn


class RSCBlock(nn.Module):

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, act: nn.Module, in_idx: torch.Tensor,
                 out_idx: torch.Tensor, width: int):
        super().__init__()
        self.conv1, self.conv2, self.relu = conv1, conv2, act
        self.width = int(width)
        self.register_buffer('in_idx', in_idx.to(device=conv1.weight.device, dtype=torch.int64))
        self.register_buffer('out_idx', out_idx.to(device=conv2.weight.device, dtype=torch.int64))
        # Fast paths: a side that keeps every channel needs no gather / scatter.
        self.reads_all = self.in_idx.numel() == self.width
        self.writes_all = self.out_idx.numel() == self.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.reads_all else x.index_select(1, self.in_idx)
        r = self.conv2(self.relu(self.conv1(h)))
        if torch.is_grad_enabled():
            return x + r if self.writes_all else x.index_add(1, self.out_idx, r)
        return x.add_(r) if self.writes_all else x.index_add_(1, self.out_idx, r)

    def extra_repr(self) -> str:
        return f'reads {self.in_idx.numel()}/{self.width}, writes {self.out_idx.numel()}/{self.width}'
