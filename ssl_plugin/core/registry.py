"""Which networks the engine can prune: a registry from a class's qualified name to a function describing it.

Matching is by name (``module.Class``, also through subclasses) so the engine never imports a host framework.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .topology import GROUP_GAMMA, Topology

_DESCRIBERS: dict[str, Callable[[nn.Module], Topology]] = {}


def register_topology(qualname: str):
    """Decorator: ``@register_topology('pkg.module.Class')`` on ``def describe(net) -> Topology``.

    This is the public API for adding an architecture: build a :class:`Topology` from the network's module tree with
    :func:`~ssl_plugin.core.topology.residual_units` and :func:`~ssl_plugin.core.topology.reconstruction_chain`.
    """
    def deco(fn):
        if qualname in _DESCRIBERS and _DESCRIBERS[qualname] is not fn:
            raise ValueError(f'a topology for {qualname} is already registered')
        _DESCRIBERS[qualname] = fn
        return fn
    return deco


def supported() -> list[str]:
    return sorted(_DESCRIBERS)


def bare_model(net: nn.Module) -> nn.Module:
    """The network inside a (Distributed)DataParallel or mmengine wrapper: surgery always happens on the bare module."""
    wrappers = ('DistributedDataParallel', 'DataParallel', 'MMDistributedDataParallel',
                'MMSeparateDistributedDataParallel')
    while hasattr(net, 'module') and isinstance(net.module, nn.Module) and type(net).__name__ in wrappers:
        net = net.module
    return net


def describe(net: nn.Module, aligned: bool | None = None) -> Topology:
    """The topology of ``net`` (or of the bare network inside a DDP wrapper).

    ``aligned``: True for the aligned view (method ``aligned``, :meth:`Topology.aligned`), False for the plain one;
    None (default) picks the aligned view exactly when ``net`` carries an aligned group's γ, so code that only holds a
    sparsity-stage network (logging, optimizer groups) sees its keys.
    """
    net = bare_model(net)
    for cls in type(net).__mro__:
        fn = _DESCRIBERS.get(f'{cls.__module__}.{cls.__qualname__}')
        if fn is not None:
            topology = fn(net)
            if aligned is None:
                aligned = any(hasattr(m, GROUP_GAMMA) for m in net.modules())
            return topology.aligned() if aligned else topology
    raise TypeError(
        f'ssl_plugin cannot prune {type(net).__module__}.{type(net).__qualname__}. Supported networks: '
        f'{", ".join(supported())}. To add one, describe it with '
        f'ssl_plugin.core.register_topology (a function returning a Topology of ResidualUnit / PixelShuffleUnit / '
        f'PlainUnit; see ssl_plugin/core/archs.py for examples).')
