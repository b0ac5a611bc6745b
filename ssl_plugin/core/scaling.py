"""Scaling factors γ: learnable per-unit multipliers inserted with hooks, so the host's architecture code is untouched.

* ``ssl_gamma`` on a conv: one factor per output filter, applied after the bias (γ = 0 zeroes the whole channel, bias
  included, which is what makes removing it exact); on a pixel-shuffle conv one factor per group of r*r consecutive
  filters (``output.shape[1] // numel`` tells the group size, so no extra state is needed).
* ``ssl_gamma_in`` on a residual block's conv1: one factor per input channel, applied to what conv1 reads (not to the
  skip path): the input side of the Residual Sparsity Connection.
* ``ssl_gamma_skip`` (method ``aligned``): one factor per skip-path channel of a trunk, one parameter tied on every
  conv that writes the path (the trunk's input conv and every block's conv2), applied after the bias like
  ``ssl_gamma``: γ = 0 keeps that channel exactly 0 along the whole trunk and in the hidden state, so every reader's
  matching input channel can go. Tied like shared embeddings: the state dict lists it under each writer (equal
  values), ``named_parameters`` once.

They are parameters of the conv module itself, so existing state-dict keys keep their names and γ is saved with the
model. A stock checkpoint without γ still loads strictly: a load pre-hook supplies the current γ for absent keys.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import bare_model
from .topology import (
    GROUP_GAMMA,
    IN_SUFFIX,
    AlignedGroup,
    PixelShuffleUnit,
    ResidualUnit,
    Topology,
    get_module,
    in_key,
)

GAMMA_OUT = 'ssl_gamma'
GAMMA_IN = 'ssl_gamma_in'
GAMMA_SKIP = GROUP_GAMMA


def _scale_output(module, args, output):
    gamma = getattr(module, GAMMA_OUT, None)
    if gamma is None:
        return output
    group = output.shape[1] // gamma.numel()
    scale = gamma.repeat_interleave(group) if group > 1 else gamma
    return output * scale.view(1, -1, 1, 1)


def _scale_skip(module, args, output):
    gamma = getattr(module, GAMMA_SKIP, None)
    if gamma is None:
        return output
    return output * gamma.view(1, -1, 1, 1)


def _scale_input(module, args):
    gamma = getattr(module, GAMMA_IN, None)
    if gamma is None:
        return None
    return (args[0] * gamma.view(1, -1, 1, 1),) + tuple(args[1:])


def _fill_missing_gamma(module, state_dict, prefix, *args):
    for name in (GAMMA_OUT, GAMMA_IN, GAMMA_SKIP):
        if hasattr(module, name) and prefix + name not in state_dict:
            state_dict[prefix + name] = getattr(module, name).detach().clone()


def _has_hook(hooks, fn) -> bool:
    return any(getattr(h, 'hook', h) is fn for h in hooks.values())


def _add(conv: nn.Module, name: str, numel: int, param: nn.Parameter | None = None) -> nn.Parameter:
    """Register γ ``name`` on ``conv`` (a new one of ones, or the given ``param``: tied) with its hooks."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise TypeError(f'scaling factors need a plain nn.Conv2d (groups=1), got {conv}')
    if hasattr(conv, name):
        if param is not None and getattr(conv, name) is not param:
            raise RuntimeError(f'{name} on {conv} is not tied to its aligned group\'s γ')
        return getattr(conv, name)
    w = conv.weight
    if param is None:
        param = nn.Parameter(torch.ones(numel, device=w.device, dtype=w.dtype))
    conv.register_parameter(name, param)
    if name == GAMMA_OUT and not _has_hook(conv._forward_hooks, _scale_output):
        conv.register_forward_hook(_scale_output)
    if name == GAMMA_SKIP and not _has_hook(conv._forward_hooks, _scale_skip):
        conv.register_forward_hook(_scale_skip)
    if name == GAMMA_IN and not _has_hook(conv._forward_pre_hooks, _scale_input):
        conv.register_forward_pre_hook(_scale_input)
    if not _has_hook(conv._load_state_dict_pre_hooks, _fill_missing_gamma):
        conv.register_load_state_dict_pre_hook(_fill_missing_gamma)
    return param


def insert_scaling_factors(net: nn.Module, topology: Topology, skip_keys=()) -> dict[str, nn.Parameter]:
    """Add γ (initialised to 1, so the network's function is unchanged) for every key of ``topology`` not in
    ``skip_keys``; idempotent. Returns ``{key: parameter}``."""
    net = bare_model(net)
    for unit in topology.units:
        for key in unit.keys:
            if key in skip_keys:
                continue
            if isinstance(unit, AlignedGroup):
                first = get_module(net, unit.writers[0])
                tied = _add(first, GAMMA_SKIP, first.out_channels)
                for path in unit.writers[1:]:
                    _add(get_module(net, path), GAMMA_SKIP, first.out_channels, tied)
            elif key.endswith(IN_SUFFIX):
                conv = get_module(net, key[:-len(IN_SUFFIX)])
                _add(conv, GAMMA_IN, conv.in_channels)
            elif isinstance(unit, PixelShuffleUnit):
                conv = get_module(net, key)
                _add(conv, GAMMA_OUT, conv.out_channels // unit.scale ** 2)
            else:
                conv = get_module(net, key)
                _add(conv, GAMMA_OUT, conv.out_channels)
    return scaling_factors(net, topology)


def _groups(topology: Topology) -> dict[str, AlignedGroup]:
    return {u.key: u for u in topology.units if isinstance(u, AlignedGroup)}


def scaling_factors(net: nn.Module, topology: Topology) -> dict[str, nn.Parameter]:
    """The γ currently present in ``net``, by key, in topology order."""
    net = bare_model(net)
    found = {}
    groups = _groups(topology)
    for key in topology.keys():
        unit = groups.get(key)
        if unit is not None:
            gamma = getattr(get_module(net, unit.writers[0]), GAMMA_SKIP, None)
            if isinstance(gamma, nn.Parameter):
                found[key] = gamma
            continue
        is_in = key.endswith(IN_SUFFIX)
        path = key[:-len(IN_SUFFIX)] if is_in else key
        try:
            conv = get_module(net, path)
        except KeyError:
            continue
        gamma = getattr(conv, GAMMA_IN if is_in else GAMMA_OUT, None)
        if isinstance(gamma, nn.Parameter):
            found[key] = gamma
    return found


@torch.no_grad()
def merge_scaling_factors(net: nn.Module, topology: Topology) -> None:
    """Fold every γ into its conv's weight (and bias for output factors) and delete it; the function is unchanged."""
    net = bare_model(net)
    groups = _groups(topology)
    for key, gamma in scaling_factors(net, topology).items():
        unit = groups.get(key)
        if unit is not None:
            for path in unit.writers:  # the same γ on every writer: scale all, then drop it from each
                conv = get_module(net, path)
                conv.weight.mul_(gamma.view(-1, 1, 1, 1))
                if conv.bias is not None:
                    conv.bias.mul_(gamma)
            for path in unit.writers:
                delattr(get_module(net, path), GAMMA_SKIP)
            continue
        is_in = key.endswith(IN_SUFFIX)
        conv = get_module(net, key[:-len(IN_SUFFIX)] if is_in else key)
        if is_in:
            conv.weight.mul_(gamma.view(1, -1, 1, 1))
            delattr(conv, GAMMA_IN)
        else:
            scale = gamma.repeat_interleave(conv.out_channels // gamma.numel())
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            if conv.bias is not None:
                conv.bias.mul_(scale)
            delattr(conv, GAMMA_OUT)


def unit_of_key(topology: Topology, key: str):
    """The unit a scaling-factor key belongs to."""
    for unit in topology.units:
        if key in unit.keys:
            return unit
    raise KeyError(key)


__all__ = ['GAMMA_IN', 'GAMMA_OUT', 'GAMMA_SKIP', 'insert_scaling_factors', 'scaling_factors', 'merge_scaling_factors',
           'in_key', 'unit_of_key', 'ResidualUnit']
