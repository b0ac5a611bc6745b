"""SSL checkpoints in BasicSR's format: ``net_g_*.pth`` = ``{'params': ..., 'params_ema': ..., 'ssl_spec': spec}``.

The format only: the state dict + spec pair, the structure detection and the strict load are core's
(:mod:`ssl_plugin.core.checkpoint`); this module says where BasicSR keeps them (``params`` / ``params_ema``, the
spec under ``ssl_spec``) and never uses BasicSR's silent ``.ignore`` renaming of tensors that do not fit.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..core import checkpoint as core_ckpt
from ..core.io import atomic_save

SPEC_KEY = 'ssl_spec'
MODULE_PREFIX = core_ckpt.WRAPPER_PREFIX


#: The atomic writer lives in the engine (``ssl_plugin.core.io``); this name stays for existing imports.
atomic_torch_save = atomic_save


def read_checkpoint(path: str) -> dict:
    """A ``net_g_*.pth`` as a dict, on CPU, with the safe (``weights_only``) unpickler."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path} is not a BasicSR checkpoint (a dict of state dicts)')
    return ckpt


def select_state(ckpt: dict, param_key: str | None, path: str = '<checkpoint>') -> tuple[dict, str | None]:
    """The state dict under ``param_key`` (BasicSR's fallback: ``params_ema`` -> ``params``), without ``module.``."""
    if param_key is not None:
        if param_key not in ckpt and param_key == 'params_ema' and 'params' in ckpt:
            param_key = 'params'
        if param_key not in ckpt:
            keys = [k for k in ckpt if isinstance(ckpt[k], dict)]
            raise KeyError(f'{path} has no {param_key!r} entry (it has {keys})')
        state = ckpt[param_key]
    else:
        state = ckpt
    return {(k[len(MODULE_PREFIX):] if k.startswith(MODULE_PREFIX) else k): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}, param_key


def structure_of(ckpt: dict, state: dict) -> str:
    """'pruned', 'scaled' (γ inserted, sparsity stage) or 'dense'."""
    return core_ckpt.structure_of(state, ckpt.get(SPEC_KEY))


check_shapes = core_ckpt.check_shapes


def load_pruned_network(net: nn.Module, path: str, param_key: str | None = 'params', strict: bool = True) -> nn.Module:
    """Load any SSL or dense BasicSR checkpoint into a freshly built host ``net`` (rebuilt to the saved structure).

    For other projects: ``net = load_pruned_network(build_network(opt['network_g']), 'net_g_latest.pth')``.
    """
    ckpt = read_checkpoint(path)
    state, _ = select_state(ckpt, param_key, path)
    core_ckpt.load_network_state(net, state, ckpt.get(SPEC_KEY), where=path, strict=strict)
    return net
