"""What is prunable and what is coupled: a declarative description of a recurrent VSR network.

The engine never traces a network (tracers fail on BasicVSR's time loop, flow warping and pixel shuffle); each supported
architecture is described once, from its module tree, by the units below. Every scaling-factor vector the engine creates
is named by a *key*: ``'<conv path>'`` for one factor per output filter (or per pixel-shuffle group),
``'<conv path>@in'`` for one factor per input channel (the input side of a residual block under RSC) and
``'<trunk path>@skip'`` for one factor per channel of a trunk's skip path (:class:`AlignedGroup`, method ``aligned``).

Torch-Pruning's split, kept here: the topology says what is coupled (units, groups), ``criterion`` what is unimportant,
``surgery`` how to cut.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace

from torch import nn

IN_SUFFIX = '@in'
SKIP_SUFFIX = '@skip'
#: Name of an aligned group's γ: one parameter, tied (the same tensor) on every conv that writes the group's skip path.
GROUP_GAMMA = 'ssl_gamma_skip'


def in_key(conv_path: str) -> str:
    """Key of the per-input-channel scaling factors of ``conv_path``."""
    return conv_path + IN_SUFFIX


def group_key(path: str) -> str:
    """Key of the per-channel scaling factors of the aligned group (skip path) of trunk ``path``."""
    return path + SKIP_SUFFIX


@dataclass(frozen=True)
class Consumer:
    """A conv whose input channels ``offset .. offset + n`` are the output channels of a unit."""
    path: str
    offset: int = 0


@dataclass(frozen=True)
class ResidualUnit:
    """A residual block ``x + conv2(act(conv1(x)))`` pruned with a Residual Sparsity Connection.

    Three independent dimensions: the skip channels conv1 reads (``conv1@in``), conv1's filters (``conv1``) and the skip
    channels conv2 writes into (``conv2``). The skip path itself keeps its width.

    ``group`` (the aligned view, method ``aligned``): the block belongs to that trunk's :class:`AlignedGroup`, which
    owns its input and output channels; only conv1's filters (``conv1``) stay a dimension of the block itself.

    ``inplace_safe`` declares that the block's input tensor is read by this block alone (no later use by the caller,
    no hook keeping it), so that without autograd the pruned block may add its residual into that tensor instead of
    copying it. It describes the network, not a pruning: it is derived from the topology, never stored in a spec.
    """
    path: str
    conv1: str = 'conv1'
    conv2: str = 'conv2'
    act: str = 'relu'
    inplace_safe: bool = False
    group: str | None = None

    @property
    def conv1_path(self) -> str:
        return f'{self.path}.{self.conv1}'

    @property
    def conv2_path(self) -> str:
        return f'{self.path}.{self.conv2}'

    @property
    def keys(self) -> tuple[str, ...]:
        if self.group is not None:
            return (self.conv1_path,)
        return (in_key(self.conv1_path), self.conv1_path, self.conv2_path)


@dataclass(frozen=True)
class AlignedGroup:
    """One trunk's skip path pruned as a single dimension (ASSL's aligned structured sparsity, Zhang et al. 2021):
    one kept channel set shared by every conv tied to it by the residual additions, so the hidden state itself gets
    thinner (no gather / scatter) instead of keeping its width as under RSC.

    ``writers``: the convs whose filters write the path (the trunk's input conv first, then every block's conv2).
    ``readers``: the convs whose input channels ``offset .. offset + width`` read it (every block's conv1, the trunk's
    input conv at the next time step, the reconstruction conv that reads the hidden state). The flow warping between
    time steps reads it too but has no weights: it follows the width. ``blocks``: the residual units inside the trunk
    (their conv1 inputs / conv2 filters belong here). ``width_attr``: the network attribute the host allocates the
    first hidden state from (set to the kept count by surgery); groups naming the same attribute must keep the same
    number of channels (:meth:`Topology.width_ties`).
    """
    path: str
    writers: tuple[str, ...]
    readers: tuple[Consumer, ...]
    blocks: tuple[str, ...]
    width_attr: str

    @property
    def key(self) -> str:
        return group_key(self.path)

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def in_blocks(self, conv_path: str) -> bool:
        """Whether ``conv_path`` lies inside one of the group's residual blocks (cut with the block)."""
        return any(conv_path.startswith(b + '.') for b in self.blocks)


@dataclass(frozen=True)
class PixelShuffleUnit:
    """A conv followed by an r x pixel shuffle: its filters go in groups of r*r consecutive channels (one output channel
    of the shuffle each), so a whole group is the pruning unit; consumers lose the matching single input channel."""
    path: str
    scale: int
    consumers: tuple[Consumer, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.path,)


@dataclass(frozen=True)
class PlainUnit:
    """A conv whose filters can be removed freely; its consumers lose the matching input channels."""
    path: str
    consumers: tuple[Consumer, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.path,)


Unit = ResidualUnit | PixelShuffleUnit | PlainUnit | AlignedGroup


@dataclass(frozen=True)
class Topology:
    """Prunable units of one network, the modules whose per-step outputs are its hidden states (for Temporal
    Finetuning), and what is never pruned (documentation and the default ``skip`` list).

    ``groups`` declares the aligned coupling groups the network supports (method ``aligned``); they are not units of
    this view: :meth:`aligned` returns the view in which they are.

    ``hidden_residual`` names the directions whose module computes the *update* of the hidden state rather than the
    state: BasicVSR++'s ``feat_prop = feat_prop + backbone(cat([..., feat_prop]))``. The state of such a direction is
    the module's output plus the last C channels of its input (C = the output's channels: the aligned previous state,
    which the caller concatenates last)."""
    arch: str
    units: tuple[Unit, ...]
    hidden: dict[str, str]
    frozen: tuple[str, ...] = field(default_factory=tuple)
    groups: tuple[AlignedGroup, ...] = field(default_factory=tuple)
    hidden_residual: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        # A hidden state is kept by HiddenStateRecorder: it must not be the input of a block that overwrites its input.
        for a, b in zip(self.units[:-1], self.units[1:]):
            if isinstance(a, ResidualUnit) and isinstance(b, ResidualUnit) and b.inplace_safe \
                    and a.path.rpartition('.')[0] == b.path.rpartition('.')[0] and a.path in self.hidden.values():
                raise ValueError(f'{self.arch}: hidden state {a.path!r} is the input of {b.path!r}, declared '
                                 'inplace_safe; a recorded hidden state must not be overwritten '
                                 '(set inplace_safe=False)')

        unknown = set(self.hidden_residual) - set(self.hidden)
        if unknown:
            raise ValueError(f'{self.arch}: hidden_residual names directions without a hidden state: {sorted(unknown)}')

    def keys(self) -> list[str]:
        return [k for u in self.units for k in u.keys]

    @property
    def is_aligned(self) -> bool:
        return any(isinstance(u, AlignedGroup) for u in self.units)

    def aligned(self) -> 'Topology':
        """The aligned view: every declared group becomes a unit (first, in declaration order) and owns its blocks'
        input / output channels."""
        if self.is_aligned:
            return self
        if not self.groups:
            raise TypeError(f'{self.arch} declares no aligned coupling groups: method aligned is not supported for it '
                            '(e.g. IconVSR, whose keyframe fusions also write the hidden state)')
        owner = {b: g.path for g in self.groups for b in g.blocks}
        units = [replace(u, group=owner[u.path]) if isinstance(u, ResidualUnit) and u.path in owner else u
                 for u in self.units]
        return replace(self, units=tuple(self.groups) + tuple(units))

    def width_ties(self) -> list[tuple[str, ...]]:
        """Keys of the aligned groups (of this view) that must keep the same number of channels, because the host
        allocates their hidden states from one width attribute (BasicVSR: ``zeros(num_feat)`` for the backward
        branch, ``zeros_like`` of its last state for the forward one)."""
        ties: dict[str, list[str]] = {}
        for u in self.units:
            if isinstance(u, AlignedGroup):
                ties.setdefault(u.width_attr, []).append(u.key)
        return [tuple(v) for v in ties.values() if len(v) > 1]

    def unit(self, path: str) -> Unit:
        for u in self.units:
            if u.path == path:
                return u
        raise KeyError(f'{self.arch} has no prunable unit {path!r}')

    def skipped_keys(self, patterns) -> set[str]:
        """Keys matched by glob ``patterns`` (matched against the key, e.g. ``'*.conv2'`` or ``'*.conv1@in'``,
        and against a residual unit's path for the whole block). A pattern matching nothing is an error: it is
        almost always a typo that would silently prune what the user meant to protect."""
        skipped = set()
        for pattern in patterns or ():
            hit = False
            for u in self.units:
                if fnmatch.fnmatchcase(u.path, pattern):
                    skipped.update(u.keys)
                    hit = True
                for k in u.keys:
                    if fnmatch.fnmatchcase(k, pattern):
                        skipped.add(k)
                        hit = True
            if not hit:
                raise ValueError(f'skip pattern {pattern!r} matches no prunable unit of {self.arch}; '
                                 f'keys look like {self.keys()[:3]} ... {self.keys()[-2:]}')
        return skipped


def get_module(net: nn.Module, path: str) -> nn.Module:
    try:
        return net.get_submodule(path)
    except AttributeError as e:
        raise KeyError(f'{type(net).__name__} has no submodule {path!r}') from e


def set_module(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition('.')
    setattr(net.get_submodule(parent) if parent else net, name, module)


def residual_units(net: nn.Module, container: str, inplace_safe: bool = False, **kwargs) -> list[ResidualUnit]:
    """One ResidualUnit per child of ``container`` (e.g. a trunk's ``main.2`` Sequential); depth comes from the tree.

    Pass ``inplace_safe=True`` only when ``container`` is a chain whose input is read by nothing but its first block
    (each later block's input is then its predecessor's output, which nothing else reads): e.g. an EDSR body used as
    ``body(x) + x`` is not, because the caller reads ``x`` again after the body.
    """
    seq = get_module(net, container)
    units = []
    for name, child in seq.named_children():
        unit = ResidualUnit(f'{container}.{name}', inplace_safe=inplace_safe, **kwargs)
        for attr in (unit.conv1, unit.conv2, unit.act):
            if not hasattr(child, attr):
                raise TypeError(f'{container}.{name} ({type(child).__name__}) is not a residual block: no {attr!r}')
        units.append(unit)
    if not units:
        raise TypeError(f'{container} holds no residual blocks')
    return units


def reconstruction_chain(net: nn.Module, chain: list[tuple[str, int | None]]) -> list[Unit]:
    """Units of a feed-forward chain of convs, each feeding the next.

    ``chain`` lists ``(conv path, pixel-shuffle scale or None)``; the last conv is the consumer of the one before it and
    is never pruned (it produces the image).
    """
    units: list[Unit] = []
    for (path, scale), (next_path, _) in zip(chain[:-1], chain[1:]):
        get_module(net, path)
        consumers = (Consumer(next_path),)
        units.append(PixelShuffleUnit(path, scale, consumers) if scale else PlainUnit(path, consumers))
    get_module(net, chain[-1][0])
    return units


def aligned_group(net: nn.Module, trunk: str, input_conv: str, blocks: list[ResidualUnit],
                  consumers: list[tuple[str, int]], width_attr: str) -> AlignedGroup:
    """The aligned group of a trunk ``input_conv -> act -> blocks`` whose output is its hidden state.

    The trunk's input is ``cat([frame, warped hidden state])``: the hidden part is the last ``width`` input channels
    of ``input_conv`` (width = its filter count). ``consumers`` lists ``(conv path, offset)`` of the convs outside the
    trunk that read the hidden state; ``width_attr`` is checked against the width.
    """
    conv = get_module(net, input_conv)
    width = conv.out_channels
    if getattr(net, width_attr, None) != width:
        raise TypeError(f'{trunk}: {type(net).__name__}.{width_attr} is {getattr(net, width_attr, None)!r}, '
                        f'the skip path has {width} channels')
    writers = (input_conv,) + tuple(b.conv2_path for b in blocks)
    readers = tuple(Consumer(b.conv1_path) for b in blocks) + (Consumer(input_conv, conv.in_channels - width),) \
        + tuple(Consumer(p, o) for p, o in consumers)
    for c in readers[len(blocks):]:  # (a block's conv1 may read fewer channels once RSC-pruned)
        if get_module(net, c.path).in_channels < c.offset + width:
            raise TypeError(f'{trunk}: {c.path} reads {get_module(net, c.path).in_channels} channels, fewer than '
                            f'{c.offset} + {width}')
    return AlignedGroup(trunk, writers, readers, tuple(b.path for b in blocks), width_attr)
