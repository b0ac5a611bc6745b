"""SSL checkpoints in BasicSR's format: ``net_g_*.pth`` = ``{'params': ..., 'params_ema': ..., 'ssl_spec': spec}``.

Why: a pruned network is BasicSR's own state dict plus the JSON-able pruning spec (no pickled modules, so every file
loads with ``torch.load(weights_only=True)``). A sparsity-stage checkpoint needs no spec: its scaling factors γ are
ordinary state-dict entries (``<conv>.ssl_gamma`` / ``<conv>.ssl_gamma_in``) that name their own keys. The structure a
checkpoint describes is rebuilt on a freshly built host network before its weights load, and every shape mismatch is
an error that names the option and the tensors, never BasicSR's silent ``.ignore`` renaming.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..core import (
    GAMMA_IN,
    GAMMA_OUT,
    RSCBlock,
    SpecError,
    apply_spec,
    bare_model,
    describe,
    insert_scaling_factors,
    scaling_factors,
)
from ..core.io import atomic_save
from ..core.loading import check_loaded
from ..core.topology import IN_SUFFIX

SPEC_KEY = 'ssl_spec'
MODULE_PREFIX = 'module.'


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


def gamma_keys(state: dict) -> set[str]:
    """Scaling-factor keys (``'<conv>'`` / ``'<conv>@in'``) whose γ a state dict holds."""
    keys = set()
    for name in state:
        prefix, _, leaf = name.rpartition('.')
        if leaf == GAMMA_OUT:
            keys.add(prefix)
        elif leaf == GAMMA_IN:
            keys.add(prefix + IN_SUFFIX)
    return keys


def is_pruned(net: nn.Module) -> bool:
    return any(isinstance(m, RSCBlock) for m in bare_model(net).modules())


def structure_of(ckpt: dict, state: dict) -> str:
    """'pruned', 'scaled' (γ inserted, sparsity stage) or 'dense'."""
    if ckpt.get(SPEC_KEY) is not None:
        return 'pruned'
    return 'scaled' if gamma_keys(state) else 'dense'


def conform_to_checkpoint(net: nn.Module, ckpt: dict, state: dict, where: str = 'checkpoint') -> None:
    """Give the freshly built ``net`` the structure the checkpoint was saved with (pruned skeleton or γ)."""
    net = bare_model(net)
    spec = ckpt.get(SPEC_KEY)
    if spec is not None:
        if is_pruned(net):
            return  # already pruned (e.g. conformed earlier); shapes are checked by the caller
        try:
            apply_spec(net, spec)
        except (SpecError, TypeError) as e:
            raise SpecError(f'{where}: its pruning spec does not fit the network: {e}') from e
        return
    wanted = gamma_keys(state)
    if not wanted or is_pruned(net):
        return
    topology = describe(net)
    unknown = wanted - set(topology.keys())
    if unknown:
        raise SpecError(f'{where}: scaling factors for {sorted(unknown)[:4]}, which {topology.arch} does not have')
    have = set(scaling_factors(net, topology))
    if have and have != wanted:
        raise SpecError(f'{where}: the checkpoint has scaling factors on {len(wanted)} keys, '
                        f'the network on {len(have)}')
    insert_scaling_factors(net, topology, skip_keys=set(topology.keys()) - wanted)


def check_shapes(net: nn.Module, state: dict, where: str = 'checkpoint', strict: bool = False, note: str = '') -> None:
    """Raise, naming ``where`` and example tensors, when a shared key has a different shape, and with ``strict`` when
    a tensor of the network is missing from ``state`` or ``state`` holds one the network lacks (the engine's check)."""
    check_loaded(bare_model(net).state_dict(), [(where, state)], strict=strict, note=note)


def load_pruned_network(net: nn.Module, path: str, param_key: str | None = 'params', strict: bool = True) -> nn.Module:
    """Load any SSL or dense BasicSR checkpoint into a freshly built host ``net`` (rebuilt to the saved structure).

    For other projects: ``net = load_pruned_network(build_network(opt['network_g']), 'net_g_latest.pth')``.
    """
    ckpt = read_checkpoint(path)
    state, _ = select_state(ckpt, param_key, path)
    conform_to_checkpoint(net, ckpt, state, where=path)
    check_shapes(net, state, where=path, strict=strict)
    bare_model(net).load_state_dict(state, strict=strict)
    return net
