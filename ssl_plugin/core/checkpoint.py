"""A saved SSL network = a plain state dict + (once pruned) the JSON-able pruning spec: one save / load pair for both
hosts, which only choose where in their own checkpoint files the two go.

Why: nothing is pickled (every file loads with ``torch.load(weights_only=True)``), and a sparsity-stage state needs no
spec: its scaling factors γ are ordinary entries (``<conv>.ssl_gamma`` / ``<conv>.ssl_gamma_in``) that name their own
keys. Loading first gives a freshly built dense host network the structure the state describes, then loads strictly;
every mismatch is an error naming the file and the tensors, never a silently skipped key.
"""
from __future__ import annotations

import torch
from torch import nn

from .loading import check_loaded
from .registry import bare_model, describe
from .rsc import RSCBlock
from .scaling import GAMMA_IN, GAMMA_OUT, GAMMA_SKIP, insert_scaling_factors, scaling_factors
from .spec import SpecError
from .surgery import apply_spec
from .topology import IN_SUFFIX, AlignedGroup, Topology

DENSE, SCALED, PRUNED = 'dense', 'scaled', 'pruned'
WRAPPER_PREFIX = 'module.'


def network_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict to save: the bare network's tensors on CPU, without a DDP wrapper's ``module.`` prefix."""
    return {k.removeprefix(WRAPPER_PREFIX): v.detach().cpu() for k, v in bare_model(net).state_dict().items()}


def gamma_keys(state: dict, topology: Topology | None = None) -> set[str]:
    """Scaling-factor keys (``'<conv>'`` / ``'<conv>@in'`` / ``'<trunk>@skip'``) whose γ a state dict holds; an
    aligned group's tied γ (listed under each writer) maps to its group key through ``topology`` (aligned view)."""
    writer_group = {w: u.key for u in (topology.units if topology else ()) if isinstance(u, AlignedGroup)
                    for w in u.writers}
    keys = set()
    for name in state:
        prefix, _, leaf = name.rpartition('.')
        if leaf == GAMMA_OUT:
            keys.add(prefix)
        elif leaf == GAMMA_IN:
            keys.add(prefix + IN_SUFFIX)
        elif leaf == GAMMA_SKIP:
            keys.add(writer_group.get(prefix, prefix + '.' + leaf))
    return keys


def has_aligned_gamma(state: dict) -> bool:
    return any(name.rpartition('.')[2] == GAMMA_SKIP for name in state)


def is_pruned(net: nn.Module) -> bool:
    return any(isinstance(m, RSCBlock) for m in bare_model(net).modules())


def structure_of(state: dict, spec: dict | None) -> str:
    """``'pruned'`` (a spec), ``'scaled'`` (γ inserted: a sparsity-stage state) or ``'dense'``."""
    if spec is not None:
        return PRUNED
    return SCALED if gamma_keys(state) else DENSE


def conform(net: nn.Module, state: dict, spec: dict | None, where: str = 'checkpoint') -> str:
    """Give the freshly built ``net`` the structure ``state`` / ``spec`` were saved with (pruned skeleton or γ);
    returns that structure. A network that already has it is left alone."""
    net = bare_model(net)
    kind = structure_of(state, spec)
    if kind == PRUNED:
        if not is_pruned(net):
            try:
                apply_spec(net, spec)
            except (SpecError, TypeError) as e:
                raise SpecError(f'{where}: its pruning spec does not fit the network: {e}') from e
        return kind
    if kind == DENSE or is_pruned(net):
        return kind
    topology = describe(net, aligned=has_aligned_gamma(state))
    wanted = gamma_keys(state, topology)
    unknown = wanted - set(topology.keys())
    if unknown:
        raise SpecError(f'{where}: scaling factors for {sorted(unknown)[:4]}, which {topology.arch} does not have')
    have = set(scaling_factors(net, topology))
    if have and have != wanted:
        raise SpecError(f'{where}: the checkpoint has scaling factors on {len(wanted)} keys, '
                        f'the network on {len(have)}')
    insert_scaling_factors(net, topology, skip_keys=set(topology.keys()) - wanted)
    return kind


def check_shapes(net: nn.Module, state: dict, where: str = 'checkpoint', strict: bool = False, note: str = '') -> None:
    """Raise, naming ``where`` and example tensors, when a shared key has a different shape, and with ``strict`` when
    a tensor of the network is missing from ``state`` or ``state`` holds one the network lacks."""
    check_loaded(bare_model(net).state_dict(), [(where, state)], strict=strict, note=note)


def load_network_state(net: nn.Module, state: dict, spec: dict | None = None, where: str = 'checkpoint',
                       strict: bool = True) -> str:
    """Load a saved SSL or dense state into a freshly built host ``net`` (rebuilt to the saved structure first);
    returns the structure (``'dense'``, ``'scaled'`` or ``'pruned'``)."""
    state = {k.removeprefix(WRAPPER_PREFIX): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    kind = conform(net, state, spec, where=where)
    check_shapes(net, state, where=where, strict=strict)
    bare_model(net).load_state_dict(state, strict=strict)
    return kind
