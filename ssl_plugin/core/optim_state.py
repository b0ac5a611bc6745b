"""Optimizer state across the cut: every surviving parameter keeps its Adam moments and step count.

Pruning replaces each touched conv by a smaller one holding ``W[out][:, in]`` times the merged γ (see
:class:`~.surgery.Cut`). A fresh optimizer would restart Adam's bias correction and second-moment estimate for
every weight of the network at once, which shows as a jump in the loss right after the cut (README: "At pruning").
Instead the state is taken by parameter name before the cut and given back after it: untouched parameters keep it as
it was, cut tensors get it sliced to the kept indices and rescaled to the merged parameterisation (a weight scaled by
``s`` has gradients scaled by ``1/s``: first moments ``/ s``, second moments ``/ s²``). The γ themselves are gone.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import bare_model
from .surgery import Cut

#: Per-parameter optimizer state tensors shaped like the parameter: first moments (Adam, AdamW, SGD momentum) and
#: second moments (Adam, AdamW, amsgrad). Scalars such as Adam's ``step`` are copied.
FIRST_MOMENTS = ('exp_avg', 'momentum_buffer')
SECOND_MOMENTS = ('exp_avg_sq', 'max_exp_avg_sq')
#: Below this |scale| a kept unit's moments are reset to zero instead of divided (a kept γ that SIR never touched
#: stays near 1; this only guards against division by a vanishing factor).
MIN_SCALE = 1e-8


def snapshot(optimizer: torch.optim.Optimizer, net: nn.Module) -> dict[str, dict]:
    """The optimizer's per-parameter state by parameter name of the bare ``net`` (tensors cloned), before a cut."""
    state = {}
    for name, p in bare_model(net).named_parameters():
        if p in optimizer.state and optimizer.state[p]:
            state[name] = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
    return state


def _slice(value: torch.Tensor, cut: Cut, is_weight: bool, power: int) -> torch.Tensor:
    out = cut.out.to(value.device)
    if is_weight:
        value = value.index_select(0, out).index_select(1, cut.in_.to(value.device))
        scale = cut.out_scale.view(-1, 1, 1, 1) * cut.in_scale.view(1, -1, 1, 1)
    else:
        value = value.index_select(0, out)
        scale = cut.out_scale
    scale = scale.to(device=value.device, dtype=torch.float64)
    tiny = scale.abs() < MIN_SCALE
    scale = torch.where(tiny, torch.ones_like(scale), scale) ** power
    return torch.where(tiny, torch.zeros_like(value), (value.double() / scale).to(value.dtype))


def carried_state(snap: dict[str, dict], net: nn.Module, cuts: dict[str, Cut]) -> tuple[dict[str, dict], list[str]]:
    """Per parameter name of the pruned ``net``: the state to give it, from ``snap`` taken before the cut.

    Returns ``(state by name, names of state entries that could not be carried)``; an entry is not carried when it is
    shaped like its parameter but is neither a known first nor second moment (an optimizer this module does not
    know): such parameters start fresh, and the caller logs the names.
    """
    out, dropped = {}, []
    for name, p in bare_model(net).named_parameters():
        path, _, leaf = name.rpartition('.')
        cut = cuts.get(path)
        old_name = f'{cut.old_path}.{leaf}' if cut is not None else name
        old = snap.get(old_name)
        if old is None:
            continue
        if cut is None:
            out[name] = old
            continue
        new = {}
        for key, value in old.items():
            if not torch.is_tensor(value) or value.dim() == 0:
                new[key] = value
            elif key in FIRST_MOMENTS or key in SECOND_MOMENTS:
                new[key] = _slice(value, cut, leaf == 'weight', 1 if key in FIRST_MOMENTS else 2)
                if new[key].shape != p.shape:
                    raise RuntimeError(f'{name}: carried optimizer state {key} has shape {tuple(new[key].shape)}, '
                                       f'the pruned parameter {tuple(p.shape)}')
            else:
                dropped.append(f'{name}:{key}')
                new = None
                break
        if new is not None:
            out[name] = new
    return out, dropped


def load_carried(optimizer: torch.optim.Optimizer, net: nn.Module, state: dict[str, dict]) -> int:
    """Give every parameter of the rebuilt ``optimizer`` its carried state; returns how many parameters got one."""
    params = dict(bare_model(net).named_parameters())
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g['params']}
    n = 0
    for name, st in state.items():
        p = params.get(name)
        if p is None or id(p) not in in_optimizer:
            continue
        optimizer.state[p] = {k: v.to(p.device) if torch.is_tensor(v) and v.dim() else v for k, v in st.items()}
        n += 1
    return n
