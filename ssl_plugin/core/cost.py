"""Cost of a network: parameters and multiply-accumulates, counted by torch's own FLOP counter (not by hand)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

from .registry import bare_model


def _register_deform_conv2d() -> None:
    """torch's counter has no formula for torchvision's deformable convolution (BasicVSR++'s alignment): without one
    its MACs would count as 0 and a network's MAC ratio come out too high. Counted like a convolution of the same
    shapes (the weighted sum; the bilinear sampling and the mask are not MACs of the weights)."""
    try:
        import torchvision  # noqa: F401  (registers torch.ops.torchvision)
        target = torch.ops.torchvision.deform_conv2d
    except (ImportError, AttributeError, RuntimeError):
        return
    if target in flop_registry:
        return

    @register_flop_formula(target)
    def _flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        n, _, ho, wo = out_shape
        out_c, in_per_group, kh, kw = weight_shape
        return 2 * n * out_c * ho * wo * in_per_group * kh * kw


_register_deform_conv2d()


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
