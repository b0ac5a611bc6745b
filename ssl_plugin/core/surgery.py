"""How to cut: merge γ, remove the unimportant set S and rebuild a smaller network whose forward is the host's own.

Residual blocks become :class:`RSCBlock`; pixel-shuffle convs lose whole groups of r*r filters and their consumers the
matching input channel; plain convs lose filters and their consumers the matching input channels. An aligned group
(method ``aligned``) cuts its trunk's skip path itself: every writer loses the pruned filters, every reader the matching
input channels, its blocks become RSC blocks that read and write the whole (thinner) path, and the network's width
attribute (``num_feat`` / ``mid_channels``, from which the host allocates the first hidden state) becomes the kept
count. Every touched conv is replaced by a new ``nn.Conv2d`` of the same kind (same device, dtype, kernel, stride,
padding) holding a slice of the old weights, so no hook or γ survives and autograd sees ordinary parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .criterion import kept_indices
from .registry import bare_model, describe
from .rsc import RSCBlock
from .scaling import merge_scaling_factors, scaling_factors
from .spec import FIELDS, SpecError, check_format, is_aligned, kind_of, make_spec
from .topology import (
    IN_SUFFIX,
    AlignedGroup,
    PixelShuffleUnit,
    ResidualUnit,
    Topology,
    get_module,
    group_key,
    in_key,
    set_module,
)


@dataclass(frozen=True)
class Cut:
    """Where a pruned conv's tensors come from: ``weight = dense[old_path].weight[out][:, in] * out_scale[:, None] *
    in_scale[None, :]`` (``bias = dense bias[out] * out_scale``); the scales are the merged γ (and a residual block's
    ``res_scale``). Optimizer state (Adam moments) is carried across the cut with it."""
    old_path: str
    out: torch.Tensor
    in_: torch.Tensor
    out_scale: torch.Tensor
    in_scale: torch.Tensor


def key_size(net: nn.Module, topology: Topology, key: str) -> int:
    """Number of units behind a scaling-factor key in the dense network."""
    if key.endswith(IN_SUFFIX):
        return get_module(net, key[:-len(IN_SUFFIX)]).in_channels
    for unit in topology.units:
        if isinstance(unit, AlignedGroup) and unit.key == key:
            return get_module(net, unit.writers[0]).out_channels
    conv = get_module(net, key)
    for unit in topology.units:
        if isinstance(unit, PixelShuffleUnit) and unit.path == key:
            return conv.out_channels // unit.scale ** 2
    return conv.out_channels


def unit_fields(unit) -> dict[str, str]:
    """Spec field -> scaling-factor key of one unit."""
    kind = kind_of(unit)
    if kind == 'residual':
        return dict(zip(FIELDS[kind], (in_key(unit.conv1_path), unit.conv1_path, unit.conv2_path)))
    if kind == 'aligned_residual':
        return {'mid': unit.conv1_path}
    return {FIELDS[kind][0]: unit.keys[0]}


def _sliced(conv: nn.Conv2d, out_idx, in_idx, scale: float = 1.0) -> nn.Conv2d:
    if type(conv) is not nn.Conv2d or conv.groups != 1:
        raise TypeError(f'cannot slice {conv}: only plain nn.Conv2d with groups=1 is supported')
    w = conv.weight.detach()
    out_idx = torch.arange(conv.out_channels) if out_idx is None else out_idx
    in_idx = torch.arange(conv.in_channels) if in_idx is None else in_idx
    new = nn.Conv2d(len(in_idx), len(out_idx), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w.index_select(0, out_idx.to(w.device)).index_select(1, in_idx.to(w.device)) * scale)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach().index_select(0, out_idx.to(w.device)) * scale)
    new.train(conv.training)
    return new


def _cut(net: nn.Module, topology: Topology, kept: dict[str, torch.Tensor], record: dict | None = None,
         scales: dict | None = None) -> dict:
    """Apply kept indices (one sorted vector per key) to ``net`` in place; return the spec.

    ``record`` (optional) receives, per new conv path, where its tensors came from (see :class:`Cut`); ``scales``
    holds the γ each dense conv had before they were merged, so the record can state the merge factor too.
    """
    scales = scales or {}

    def note(new_path, old_path, conv, out_idx, in_idx, extra=1.0):
        if record is None:
            return
        out_scale, in_scale = scales.get(old_path, (None, None))
        out_idx = torch.arange(conv.out_channels) if out_idx is None else out_idx.cpu()
        in_idx = torch.arange(conv.in_channels) if in_idx is None else in_idx.cpu()
        o = torch.ones(conv.out_channels, dtype=torch.float64) if out_scale is None else out_scale
        i = torch.ones(conv.in_channels, dtype=torch.float64) if in_scale is None else in_scale
        record[new_path] = Cut(old_path, out_idx, in_idx, o[out_idx] * float(extra), i[in_idx])

    out_keep: dict[str, torch.Tensor] = {}
    in_mask: dict[str, torch.Tensor] = {}
    units_spec: dict[str, dict] = {}

    def drop_inputs(consumer, unit_kept, n):
        conv = get_module(net, consumer.path)
        mask = in_mask.setdefault(consumer.path, torch.ones(conv.in_channels, dtype=torch.bool))
        lost = torch.ones(n, dtype=torch.bool)
        lost[unit_kept] = False
        mask[consumer.offset:consumer.offset + n] &= ~lost

    widths: dict[str, int] = {}
    for unit in topology.units:
        if isinstance(unit, AlignedGroup):
            k = kept[unit.key]
            n = get_module(net, unit.writers[0]).out_channels
            for path in unit.writers:
                if not unit.in_blocks(path):
                    out_keep[path] = k
            for consumer in unit.readers:
                if not unit.in_blocks(consumer.path):
                    drop_inputs(consumer, k, n)
            if widths.setdefault(unit.width_attr, len(k)) != len(k):
                raise ValueError(f'{unit.path}: keeps {len(k)} skip channels, another group allocated from '
                                 f'{unit.width_attr} keeps {widths[unit.width_attr]}; they must keep the same number')
            units_spec[unit.path] = {'kind': 'aligned', 'channels': k.tolist(), 'total': {'channels': n}}
        elif isinstance(unit, ResidualUnit):
            block = get_module(net, unit.path)
            if isinstance(block, RSCBlock):
                raise SpecError(f'{unit.path} is already pruned')
            c1, c2 = get_module(block, unit.conv1), get_module(block, unit.conv2)
            if unit.group is not None:
                # Inside an aligned group: the block reads and writes the whole (thinner) skip path.
                k_in = k_out = kept[group_key(unit.group)]
                k_mid = kept[unit.conv1_path]
                width, idx = len(k_in), torch.arange(len(k_in))
                entry = {'kind': 'aligned_residual', 'mid': k_mid.tolist(), 'total': {'mid': c1.out_channels}}
            else:
                k_in, k_mid, k_out = (kept[k] for k in unit.keys)
                width = c1.in_channels
                entry = {'kind': 'residual', 'in': k_in.tolist(), 'mid': k_mid.tolist(), 'out': k_out.tolist(),
                         'total': {'in': c1.in_channels, 'mid': c1.out_channels, 'out': c2.out_channels}}
            res_scale = float(getattr(block, 'res_scale', 1.0))
            note(f'{unit.path}.conv1', unit.conv1_path, c1, k_mid, k_in)
            note(f'{unit.path}.conv2', unit.conv2_path, c2, k_out, k_mid, res_scale)
            new = RSCBlock(_sliced(c1, k_mid, k_in), _sliced(c2, k_out, k_mid, res_scale), get_module(block, unit.act),
                           idx if unit.group is not None else k_in, idx if unit.group is not None else k_out,
                           width=width, inplace=unit.inplace_safe)
            new.train(block.training)
            set_module(net, unit.path, new)
            units_spec[unit.path] = entry
        else:
            k = kept[unit.path]
            conv = get_module(net, unit.path)
            if isinstance(unit, PixelShuffleUnit):
                r2 = unit.scale ** 2
                n = conv.out_channels // r2
                out_keep[unit.path] = (k.view(-1, 1) * r2 + torch.arange(r2)).flatten()
                units_spec[unit.path] = {'kind': 'pixel_shuffle', 'groups': k.tolist(), 'total': {'groups': n}}
            else:
                n = conv.out_channels
                out_keep[unit.path] = k
                units_spec[unit.path] = {'kind': 'plain', 'out': k.tolist(), 'total': {'out': n}}
            for consumer in unit.consumers:
                drop_inputs(consumer, k, n)

    for path in dict.fromkeys(list(out_keep) + list(in_mask)):
        conv = get_module(net, path)
        in_idx = torch.nonzero(in_mask[path]).flatten() if path in in_mask else None
        note(path, path, conv, out_keep.get(path), in_idx)
        set_module(net, path, _sliced(conv, out_keep.get(path), in_idx))
    for attr, width in widths.items():
        setattr(net, attr, width)
    return make_spec(topology.arch, units_spec)


def prune(net: nn.Module, pruned: dict[str, torch.Tensor], topology: Topology | None = None,
          record: dict | None = None) -> dict:
    """Merge every γ into the weights, remove the units in ``pruned`` (key -> indices) and return the spec.

    The network is changed in place (pass the bare module or a DDP wrapper; wrappers must be rebuilt afterwards).
    ``record`` (a dict) receives a :class:`Cut` per replaced conv, so optimizer state can follow the cut.
    """
    net = bare_model(net)
    topology = topology or describe(net)
    unknown = set(pruned) - set(topology.keys())
    if unknown:
        raise KeyError(f'pruned set names keys that {topology.arch} does not have: {sorted(unknown)[:5]}')
    scales = _gamma_scales(net, topology) if record is not None else None
    merge_scaling_factors(net, topology)
    kept = {}
    for key in topology.keys():
        n = key_size(net, topology, key)
        idx = pruned.get(key, torch.empty(0, dtype=torch.int64)).cpu()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f'{key}: pruned index out of range 0..{n - 1}')
        kept[key] = kept_indices(n, idx)
        if kept[key].numel() == 0:
            raise ValueError(f'{key}: every unit would be removed; at least one must stay')
    return _cut(net, topology, kept, record, scales)


@torch.no_grad()
def _gamma_scales(net: nn.Module, topology: Topology) -> dict:
    """Per conv path: (per-filter factor, per-input-channel factor) that merging γ multiplies its weight by."""
    scales: dict[str, list] = {}
    groups = {u.key: u for u in topology.units if isinstance(u, AlignedGroup)}
    for key, gamma in scaling_factors(net, topology).items():
        if key in groups:
            for path in groups[key].writers:
                scales.setdefault(path, [None, None])[0] = gamma.detach().double().cpu()
            continue
        is_in = key.endswith(IN_SUFFIX)
        path = key[:-len(IN_SUFFIX)] if is_in else key
        g = gamma.detach().double().cpu()
        entry = scales.setdefault(path, [None, None])
        if is_in:
            entry[1] = g
        else:
            entry[0] = g.repeat_interleave(get_module(net, path).out_channels // g.numel())
    return {k: tuple(v) for k, v in scales.items()}


def apply_spec(net: nn.Module, spec) -> nn.Module:
    """Rebuild the pruned skeleton described by ``spec`` on a freshly built dense host network (in place; returned).

    Raises :class:`SpecError` naming the mismatch when the spec does not fit the network.
    """
    spec = check_format(spec)
    net = bare_model(net)
    topology = describe(net, aligned=is_aligned(spec))
    if spec['arch'] != topology.arch:
        raise SpecError(f'pruning spec is for {spec["arch"]}, the network is {topology.arch}')
    if scaling_factors(net, topology):
        raise SpecError('apply a pruning spec to a fresh dense network, not one carrying scaling factors')
    paths = [u.path for u in topology.units]
    missing, extra = set(paths) - set(spec['units']), set(spec['units']) - set(paths)
    if missing or extra:
        raise SpecError(f'pruning spec does not fit this {topology.arch}: units missing from the spec '
                        f'{sorted(missing)[:4]}, units the network lacks {sorted(extra)[:4]} '
                        '(different depth or architecture?)')
    kept = {}
    for unit in topology.units:
        entry = spec['units'][unit.path]
        kind = kind_of(unit)
        if entry['kind'] != kind:
            raise SpecError(f'{unit.path}: spec says {entry["kind"]}, the network has a {kind} unit')
        if isinstance(get_module(net, unit.path), RSCBlock):
            raise SpecError(f'{unit.path} is already pruned: apply a spec to a freshly built dense network')
        for field, key in unit_fields(unit).items():
            n = key_size(net, topology, key)
            if entry['total'].get(field) != n:
                raise SpecError(f'{unit.path}: spec was made for {entry["total"].get(field)} {field} units, '
                                f'this network has {n} (different width?)')
            if entry[field][-1] >= n:
                raise SpecError(f'{unit.path}: index {entry[field][-1]} out of range for {n} {field} units')
            kept[key] = torch.tensor(entry[field], dtype=torch.int64)
    _cut(net, topology, kept)
    return net
