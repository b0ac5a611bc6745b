"""What a selection S costs, budgets, and the per-layer report shown before any training.

Why: users think in budgets ("2x fewer MACs"), and a selection that cuts the wrong layers (a raw global pool on a
network whose residual blocks start 10x smaller) should be visible before GPU days are spent on it. The dense
network's MACs are counted once per conv by torch's FLOP counter; the MACs and params of a pruned network then follow
exactly from the kept widths (a conv with groups 1 costs in x out x k² per output pixel), so a bisection over the
pruning ratio needs no further forward. Selection is deterministic, and more units marked never keeps more, so the
cost is monotone in the ratio.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .criterion import select_unimportant, tie_kept_counts
from .registry import bare_model
from .surgery import key_size
from .topology import AlignedGroup, PixelShuffleUnit, ResidualUnit, Topology, get_module

#: A budget target is met when the achieved ratio is within this fraction of it.
BUDGET_TOLERANCE = 0.02
TARGETS = {'target_mac_ratio': 'MAC ratio', 'target_params_ratio': 'params ratio'}
RECONSTRUCTION = 'reconstruction'


def _top(path: str) -> str:
    return path.split('.')[0]


def network_scale(topology: Topology) -> int:
    """The upscaling factor: the product of the pixel-shuffle scales of the reconstruction."""
    return math.prod(u.scale for u in topology.units if isinstance(u, PixelShuffleUnit))


def lr_size(frames: int, gt_size, topology: Topology) -> list[int]:
    """(frames, H, W) of the LR clip for a GT crop of ``gt_size`` (an int, or (H, W))."""
    h, w = (gt_size, gt_size) if isinstance(gt_size, int) else gt_size
    r = network_scale(topology)
    return [int(frames), int(h) // r, int(w) // r]


def example_clip(net: nn.Module, topology: Topology, size) -> torch.Tensor:
    """A zero LR clip (1, frames, C, H, W) on the network's device; C = the image channels the last conv writes
    (a super-resolution network reads as many as it writes)."""
    net = bare_model(net)
    last = [u for u in topology.units if not isinstance(u, ResidualUnit)][-1].consumers[-1].path
    channels = get_module(net, last).out_channels
    p = next(net.parameters())
    t, h, w = size
    return torch.zeros(1, t, channels, h, w, device=p.device, dtype=p.dtype)


def conv_widths(net: nn.Module, topology: Topology, pruned: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """Per touched conv: ``(in_kept, in_total, out_kept, out_total)`` after removing ``pruned`` (key -> indices)."""
    net = bare_model(net)
    lost = {k: int(v.numel()) for k, v in pruned.items()}
    out: dict[str, list] = {}

    def entry(path):
        if path not in out:
            conv = get_module(net, path)
            out[path] = [conv.in_channels, conv.in_channels, conv.out_channels, conv.out_channels]
        return out[path]

    for unit in topology.units:
        if isinstance(unit, AlignedGroup):  # the skip path: every writer's filters, every reader's inputs
            n_lost = lost.get(unit.key, 0)
            for w in unit.writers:
                entry(w)[2] -= n_lost
            for reader in unit.readers:
                entry(reader.path)[0] -= n_lost
        elif isinstance(unit, ResidualUnit) and unit.group is not None:  # only its inner filters are its own
            n_lost = lost.get(unit.conv1_path, 0)
            entry(unit.conv1_path)[2] -= n_lost
            entry(unit.conv2_path)[0] -= n_lost
        elif isinstance(unit, ResidualUnit):
            k_in, k_mid, k_out = unit.keys
            c1, c2 = entry(unit.conv1_path), entry(unit.conv2_path)
            c1[0] -= lost.get(k_in, 0)
            c1[2] -= lost.get(k_mid, 0)
            c2[0] -= lost.get(k_mid, 0)
            c2[2] -= lost.get(k_out, 0)
        else:
            n_lost = lost.get(unit.path, 0)
            conv = entry(unit.path)
            conv[2] -= n_lost * (unit.scale ** 2 if isinstance(unit, PixelShuffleUnit) else 1)
            for consumer in unit.consumers:
                entry(consumer.path)[0] -= n_lost
    return {p: tuple(v) for p, v in out.items()}


@dataclass
class CostModel:
    """Dense cost of a network on one input, per conv and per part, from one FLOP-counted forward."""
    macs: int
    params: int
    conv_macs: dict[str, int]  # per conv path (all calls)
    part_macs: dict[str, int]
    part_params: dict[str, int]
    part_of: dict[str, str]  # top-level module name -> part
    size: tuple | None = None

    @classmethod
    @torch.no_grad()
    def measure(cls, net: nn.Module, topology: Topology, example: torch.Tensor | None) -> 'CostModel':
        """``example``: one input clip (1, T, C, H, W); None counts params only."""
        net = bare_model(net)
        part_of = {}
        for unit in topology.units:
            if isinstance(unit, ResidualUnit):
                part_of.setdefault(_top(unit.path), _top(unit.path))
        for unit in topology.units:
            if isinstance(unit, AlignedGroup):
                part_of.setdefault(_top(unit.path), _top(unit.path))
            elif not isinstance(unit, ResidualUnit):
                for p in (unit.path, *(c.path for c in unit.consumers)):
                    part_of.setdefault(_top(p), RECONSTRUCTION)
        for name, _ in net.named_children():
            part_of.setdefault(name, name)
        parts = list(dict.fromkeys(part_of.values()))
        part_params = dict.fromkeys(parts, 0)
        for name, p in net.named_parameters():
            part_params[part_of.get(_top(name), 'other')] = part_params.get(part_of.get(_top(name), 'other'), 0) \
                + p.numel()
        convs = {name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
        conv_macs, part_macs, total = {}, dict.fromkeys(parts, 0), 0
        if example is not None:
            was_training = net.training
            net.eval()
            try:
                with FlopCounterMode(display=False) as counter:
                    net(example)
            finally:
                net.train(was_training)
            total = counter.get_total_flops() // 2
            root = None
            for name, ops in counter.get_flop_counts().items():
                if name == 'Global':
                    continue
                head, _, rest = name.partition('.')
                root = root or (head if not rest else None)
                if not rest:
                    continue
                macs = sum(ops.values()) // 2
                if rest in convs:
                    conv_macs[rest] = macs
                if '.' not in rest:
                    part = part_of.get(rest, 'other')
                    part_macs[part] = part_macs.get(part, 0) + macs
            rest = total - sum(part_macs.values())
            if rest:
                part_macs['other'] = part_macs.get('other', 0) + rest
        size = tuple(example.shape[1:2]) + tuple(example.shape[-2:]) if example is not None else None
        return cls(total, sum(part_params.values()), conv_macs, part_macs, part_params, part_of, size)

    def pruned_cost(self, net: nn.Module, topology: Topology, pruned: dict[str, torch.Tensor]) -> dict:
        """Params and MACs (total and per part) of ``net`` with ``pruned`` removed, without building it."""
        net = bare_model(net)
        macs, params = self.macs, self.params
        part_macs, part_params = dict(self.part_macs), dict(self.part_params)
        for path, (i_k, i_n, o_k, o_n) in conv_widths(net, topology, pruned).items():
            conv = get_module(net, path)
            keep = (i_k * o_k) / (i_n * o_n)
            part = self.part_of.get(_top(path), 'other')
            d_params = conv.weight.numel() - round(conv.weight.numel() * keep)
            if conv.bias is not None:
                d_params += o_n - o_k
            params -= d_params
            part_params[part] -= d_params
            if path in self.conv_macs:
                d_macs = self.conv_macs[path] - round(self.conv_macs[path] * keep)
                macs -= d_macs
                part_macs[part] -= d_macs
        return {'macs': macs, 'params': params, 'part_macs': part_macs, 'part_params': part_params}


def _ratio(dense: int, pruned: int) -> float:
    return dense / pruned if pruned else math.inf


def select(scores: dict[str, torch.Tensor], ratio: float, scope: str, align: int, max_layer_ratio: float,
           ties=None) -> dict[str, torch.Tensor]:
    """S at ``ratio``; with ``ties`` (the aligned view's trunks that share one width) the tied keys then keep one
    count. Both steps only add units as the ratio grows, so the cost stays monotone in it."""
    s = select_unimportant(scores, ratio, scope, align, max_layer_ratio)
    return tie_kept_counts(s, scores, ties) if ties else s


def budget_totals(cost: CostModel, pruned_cost: dict | None, key: str, exclude=()) -> int:
    """Params or MACs (``key``) of the dense network (``pruned_cost`` None) or of a pruned one, without the parts in
    ``exclude`` (e.g. ``spynet``: the paper counts params without the flow network)."""
    parts = (cost.part_params if key == 'params' else cost.part_macs) if pruned_cost is None else \
        pruned_cost['part_params' if key == 'params' else 'part_macs']
    total = (cost.params if key == 'params' else cost.macs) if pruned_cost is None else pruned_cost[key]
    return total - sum(parts.get(x, 0) for x in exclude)


def check_exclude(cost: CostModel, exclude, where: str = 'ssl') -> None:
    """Every name in ``exclude`` must be a part of the cost model (a top-level module of its own, or
    ``reconstruction``): a module counted inside another part cannot be left out alone."""
    parts = sorted(set(cost.part_of.values()))
    for x in exclude:
        if x in parts:
            continue
        inside = f' (it is counted in part {cost.part_of[x]!r})' if x in cost.part_of else ''
        raise ValueError(f'{where}.budget_exclude: {x!r} is not a part of this network{inside}; parts: {parts}')


def find_ratio(scores: dict[str, torch.Tensor], cost: CostModel, net: nn.Module, topology: Topology, target: str,
               value: float, scope: str, align: int, max_layer_ratio: float, where: str = 'ssl',
               tolerance: float = BUDGET_TOLERANCE, ties=None, exclude=()) -> tuple[float, dict[str, torch.Tensor],
                                                                               float]:
    """The pruning ratio whose selection meets ``target`` (``target_mac_ratio`` / ``target_params_ratio``: dense /
    pruned, without the parts in ``exclude``) within ``tolerance``; returns ``(ratio, S, achieved)``. Bisection over
    the ratio (the cost is monotone in it; ``align``, the layer cap and ``ties`` are part of the selection). A target
    outside the reachable range, or one that the steps of ``align`` jump over, is an error naming what can be
    reached."""
    if target not in TARGETS:
        raise ValueError(f'unknown budget target {target!r}; known: {sorted(TARGETS)}')
    if target == 'target_mac_ratio' and not cost.macs:
        raise ValueError(f'{where}.{target} needs MACs: no frame size to count them on')
    check_exclude(cost, exclude, where)
    key = 'macs' if target == 'target_mac_ratio' else 'params'
    dense = budget_totals(cost, None, key, exclude)

    def at(p):
        s = select(scores, p, scope, align, max_layer_ratio, ties)
        return s, _ratio(dense, budget_totals(cost, cost.pruned_cost(net, topology, s), key, exclude))

    lo, hi = 1e-9, 1.0 - 1e-9
    s_lo, f_lo = at(lo)
    s_hi, f_hi = at(hi)
    what = TARGETS[target]
    reach = f'{f_lo:.3f} .. {f_hi:.3f}'
    settings = f'scope {scope}, align {align}, max_layer_ratio {max_layer_ratio}' + (
        f', budget_exclude {list(exclude)}' if exclude else '')
    if value > f_hi * (1 + tolerance) or value < f_lo * (1 - tolerance):
        raise ValueError(f'{where}.{target} = {value}: unreachable; with {settings} the {what} (dense / pruned) '
                         f'can be {reach}')
    best = min(((abs(f_lo / value - 1), lo, s_lo, f_lo), (abs(f_hi / value - 1), hi, s_hi, f_hi)),
               key=lambda t: t[0])
    for _ in range(60):
        if best[0] <= tolerance and hi - lo < 1e-6:
            break
        mid = (lo + hi) / 2
        s_mid, f_mid = at(mid)
        cand = (abs(f_mid / value - 1), mid, s_mid, f_mid)
        if cand[0] < best[0] or (cand[0] == best[0] and mid < best[1]):
            best = cand
        if f_mid < value:
            lo, f_lo = mid, f_mid
        else:
            hi, f_hi = mid, f_mid
        if hi - lo < 1e-9:
            break
    err, ratio, s, achieved = best
    for digits in range(2, 10):  # the shortest ratio that makes the same selection, for logs and configs
        r = round(ratio, digits)
        if 0 < r < 1 and all(torch.equal(a, b) for a, b in zip(
                select(scores, r, scope, align, max_layer_ratio, ties).values(), s.values())):
            ratio = r
            break
    if err > tolerance:
        raise ValueError(f'{where}.{target} = {value}: not reachable within {tolerance:.0%}; with {settings} the '
                         f'nearest {what}s are {f_lo:.3f} and {f_hi:.3f} (the selection changes in steps: a smaller '
                         f'align gives finer ones); reachable range {reach}')
    return ratio, s, achieved


def selection_report(net: nn.Module, topology: Topology, pruned: dict[str, torch.Tensor], cost: CostModel,
                     ratio: float | None = None, settings: dict | None = None, exclude=()) -> dict:
    """JSON-able record of a selection: per key units / pruned, per part and in total params and MACs dense ->
    pruned (MACs on ``cost.size``, the (frames, H, W) of the LR input; absent without one); with ``exclude`` also
    the ratios without those parts (what a budget target with ``budget_exclude`` met)."""
    net = bare_model(net)
    layers = {}
    for key in topology.keys():
        n = key_size(net, topology, key)
        m = int(pruned[key].numel()) if key in pruned else 0
        layers[key] = {'units': n, 'pruned': m, 'kept': n - m}
    p = cost.pruned_cost(net, topology, pruned)
    report = {'layers': layers, 'params_dense': cost.params, 'params_pruned': p['params'],
              'param_ratio': _ratio(cost.params, p['params'])}
    if cost.size is not None:
        report.update({'macs_dense': cost.macs, 'macs_pruned': p['macs'], 'mac_ratio': _ratio(cost.macs, p['macs']),
                       'size': list(cost.size)})
    if exclude:
        b = {'exclude': list(exclude), 'params_dense': budget_totals(cost, None, 'params', exclude),
             'params_pruned': budget_totals(cost, p, 'params', exclude)}
        b['param_ratio'] = _ratio(b['params_dense'], b['params_pruned'])
        if cost.size is not None:
            b.update(macs_dense=budget_totals(cost, None, 'macs', exclude),
                     macs_pruned=budget_totals(cost, p, 'macs', exclude))
            b['mac_ratio'] = _ratio(b['macs_dense'], b['macs_pruned'])
        report['budget'] = b
    parts = {}
    for part in dict.fromkeys(list(cost.part_params) + list(cost.part_macs)):
        row = {'params_dense': cost.part_params.get(part, 0), 'params_pruned': p['part_params'].get(part, 0)}
        if cost.size is not None:
            row.update({'macs_dense': cost.part_macs.get(part, 0), 'macs_pruned': p['part_macs'].get(part, 0)})
        if any(row.values()):  # parts without parameters or MACs (activations, pixel shuffles) are left out
            parts[part] = row
    report['parts'] = parts
    if ratio is not None:
        report['pruning_ratio'] = ratio
    if settings:
        report['settings'] = dict(settings)
    return report


def _m(n: int) -> str:
    return f'{n / 1e9:.3f} G' if n >= 1e8 else f'{n / 1e6:.3f} M' if n >= 1e5 else f'{n:,d}'


def format_report(report: dict) -> list[str]:
    """The report as text lines (the hosts' logs and the dry-run tool print the same)."""
    lines = []
    s = report.get('settings') or {}
    head = ', '.join(f'{k} {v}' for k, v in s.items())
    total_units = sum(v['units'] for v in report['layers'].values())
    total_pruned = sum(v['pruned'] for v in report['layers'].values())
    ratio = report.get('pruning_ratio')
    lines.append(f'selection{f" ({head})" if head else ""}: |S| = {total_pruned} of {total_units} units'
                 + (f' at pruning ratio {ratio:.4g}' if ratio is not None else ''))
    width = max(len(k) for k in report['layers'])
    lines.append(f'  {"key":<{width}}  units  pruned  kept')
    for key, v in report['layers'].items():
        lines.append(f'  {key:<{width}}  {v["units"]:5d}  {v["pruned"]:6d}  {v["kept"]:4d}')
    macs = 'macs_dense' in report
    lines.append(f'  {"part":<{width}}  params dense -> pruned' + ('   MACs dense -> pruned' if macs else ''))
    for part, v in report['parts'].items():
        row = f'  {part:<{width}}  {_m(v["params_dense"])} -> {_m(v["params_pruned"])}'
        if macs:
            row += f'   {_m(v["macs_dense"])} -> {_m(v["macs_pruned"])}'
        lines.append(row)
    total = f'  total: params {report["params_dense"]:,d} -> {report["params_pruned"]:,d} ' \
            f'(x{report["param_ratio"]:.3f})'
    if macs:
        t, h, w = report['size']
        total += f', MACs per clip of {t} x {h}x{w} LR frames {report["macs_dense"]:,d} -> ' \
                 f'{report["macs_pruned"]:,d} (MAC ratio x{report["mac_ratio"]:.3f})'
    lines.append(total)
    b = report.get('budget')
    if b:
        row = f'  without {", ".join(b["exclude"])}: params {b["params_dense"]:,d} -> {b["params_pruned"]:,d} ' \
              f'(x{b["param_ratio"]:.3f})'
        if 'mac_ratio' in b:
            row += f', MACs {b["macs_dense"]:,d} -> {b["macs_pruned"]:,d} (x{b["mac_ratio"]:.3f})'
        lines.append(row)
    return lines


def dumps(report: dict) -> str:
    return json.dumps(report, indent=1, sort_keys=False) + '\n'
