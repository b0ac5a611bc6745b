"""Cost of a network: parameters and multiply-accumulates, counted by torch's own FLOP counter (not by hand)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import bare_model


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in bare_model(net).parameters())


@torch.no_grad()
def count_macs(net: nn.Module, *inputs) -> int:
    """MACs of one forward on ``inputs`` (FlopCounterMode counts 2 FLOPs per MAC)."""
    net = bare_model(net)
    was_training = net.training
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            net(*inputs)
    finally:
        net.train(was_training)
    return counter.get_total_flops() // 2


def cost_summary(dense: nn.Module, pruned: nn.Module, *inputs) -> dict:
    """Params and MACs of both networks on the same input, and the ratios dense / pruned."""
    pd, pp = count_params(dense), count_params(pruned)
    md, mp = count_macs(dense, *inputs), count_macs(pruned, *inputs)
    return {'params_dense': pd, 'params_pruned': pp, 'macs_dense': md, 'macs_pruned': mp,
            'param_ratio': pd / pp, 'mac_ratio': md / mp}
