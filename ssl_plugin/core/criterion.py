"""What is unimportant: the L1-norm criterion and the choice of the unimportant set S.

A *unit* is what one scaling factor controls: a filter, a residual block's input channel, or a pixel-shuffle group.
Its score is the L1 norm of its weights. By default the norm is divided by the unit's number of weights (``normalize``)
so that units of different fan-in (a 1x1 fusion filter, a 3x3 residual filter, a 4-filter pixel-shuffle group) compare
fairly in one global pool, as the official code's mean |W| does.

Scopes: ``global`` pools the raw scores (the paper, literally); ``global_normalized`` divides each layer's scores by
that layer's mean before pooling (as Torch-Pruning's global pruning normalises per group), so a layer initialised or
trained at a smaller scale (BasicSR / MMagic residual blocks start 10x smaller) is not taken first as a whole;
``local`` takes the same fraction of every layer. ``max_layer_ratio`` caps the fraction any one layer loses.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .registry import bare_model
from .topology import IN_SUFFIX, AlignedGroup, PixelShuffleUnit, Topology, get_module


@torch.no_grad()
def l1_scores(net: nn.Module, topology: Topology, keys=None, normalize: bool = True) -> dict[str, torch.Tensor]:
    """L1 norm of each unit's weights, one float64 CPU vector per scaling-factor key (topology order)."""
    net = bare_model(net)
    scores = {}
    for unit in topology.units:
        for key in unit.keys:
            if keys is not None and key not in keys:
                continue
            if isinstance(unit, AlignedGroup):
                scores[key] = coupled_scores(net, unit, normalize)
                continue
            if key.endswith(IN_SUFFIX):
                w = get_module(net, key[:-len(IN_SUFFIX)]).weight.transpose(0, 1)
            else:
                w = get_module(net, key).weight
                if isinstance(unit, PixelShuffleUnit):
                    w = w.reshape(w.shape[0] // unit.scale ** 2, -1)
            w = w.detach().reshape(w.shape[0], -1).abs().double().cpu()
            scores[key] = w.mean(1) if normalize else w.sum(1)
    return scores


SCOPES = ('global', 'global_normalized', 'local')


@torch.no_grad()
def coupled_scores(net: nn.Module, group: AlignedGroup, normalize: bool = True) -> torch.Tensor:
    """Score of each skip-path channel of an aligned group: the **mean** over every weight slice the cut removes with
    that channel (each writer's filter, each reader's input-channel slice) of that slice's L1 score (mean |W| with
    ``normalize``, else sum |W|, as for every other unit). The mean, not the sum, keeps a group channel on the scale of
    one filter in the global pool, whatever the trunk's depth. Float64 on CPU."""
    net = bare_model(net)
    width = get_module(net, group.writers[0]).out_channels
    slices = [get_module(net, p).weight for p in group.writers]
    slices += [get_module(net, c.path).weight[:, c.offset:c.offset + width].transpose(0, 1) for c in group.readers]
    per_slice = []
    for w in slices:
        w = w.detach().reshape(width, -1).abs().double().cpu()
        per_slice.append(w.mean(1) if normalize else w.sum(1))
    return torch.stack(per_slice).mean(0)


def tie_kept_counts(pruned: dict[str, torch.Tensor], scores: dict[str, torch.Tensor],
                    ties: list[tuple[str, ...]]) -> dict[str, torch.Tensor]:
    """Give keys that must keep the same number of units (``ties``, e.g. two trunks whose hidden states the host
    allocates from one width) the largest kept count among them: each gives back its highest-scoring marked units (as
    ``align`` does). A tied key absent from ``scores`` (skipped) keeps everything, so its partners do too."""
    out = dict(pruned)
    for tie in ties:
        if any(k not in scores for k in tie):
            for k in tie:
                if k in out:
                    out[k] = out[k][:0]
            continue
        n_pruned = min(int(out[k].numel()) for k in tie)
        for k in tie:
            m = out[k]
            if m.numel() > n_pruned:
                ranked = m[torch.sort(scores[k][m], stable=True).indices]
                out[k] = torch.sort(ranked[:n_pruned]).values
    return out


def _kept_count(n: int, n_pruned: int, align: int) -> int:
    kept = max(n - n_pruned, 1)
    if align > 1:
        kept = min(n, math.ceil(kept / align) * align)
    return kept


def max_pruned(n: int, max_layer_ratio: float) -> int:
    """Most units a layer of ``n`` may lose: ``floor(max_layer_ratio * n)``, and always one unit kept."""
    return min(math.floor(round(max_layer_ratio * n, 9)), n - 1)


def normalized_scores(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each layer's scores divided by their mean (a layer of zeros stays zeros): the pool then compares a unit with
    its own layer, not the layers' scales."""
    out = {}
    for k, s in scores.items():
        mean = s.mean()
        out[k] = s / mean if mean > 0 else s.clone()
    return out


def _global_marks(scores: dict[str, torch.Tensor], keys: list[str], ratio: float,
                  max_layer_ratio: float = 1.0) -> dict[str, torch.Tensor]:
    """The ``ceil(p*N)`` smallest scores of the pool, skipping any beyond its key's limit (``max_pruned``)."""
    sizes = torch.tensor([scores[k].numel() for k in keys])
    limits = torch.tensor([max_pruned(scores[k].numel(), max_layer_ratio) for k in keys])
    flat = torch.cat([scores[k] for k in keys])
    owner = torch.repeat_interleave(torch.arange(len(keys)), sizes)
    index = torch.cat([torch.arange(n) for n in sizes.tolist()])
    n_pruned = min(math.ceil(round(ratio * flat.numel(), 9)), flat.numel())
    order = torch.sort(flat, stable=True).indices
    owner_sorted = owner[order]
    # Rank of each unit among its own key's units in pool order; units from the key's limit on are never marked.
    rank = torch.empty_like(order)
    for i in range(len(keys)):
        at = torch.nonzero(owner_sorted == i).flatten()
        rank[at] = torch.arange(at.numel())
    order = order[rank < limits[owner_sorted]][:n_pruned]
    return {k: torch.sort(index[order][owner[order] == i]).values for i, k in enumerate(keys)}


def select_unimportant(scores: dict[str, torch.Tensor], ratio: float, scope: str = 'global',
                       align: int = 1, max_layer_ratio: float = 1.0) -> dict[str, torch.Tensor]:
    """Indices (sorted, int64) of the units to prune, per key.

    * ``global`` (the paper): pool every score, mark the ``ceil(p*N)`` smallest; ``global_normalized``: the same
      on scores divided by their layer's mean; ``local``: ``ceil(p*n)`` per key;
    * ties are broken by position (key order, then index), so the choice is deterministic;
    * no key loses more than ``floor(max_layer_ratio * n)`` units and every key keeps at least one: in a pool the
      units beyond a key's limit are passed over and the next smallest scores elsewhere are taken instead, so
      exactly ``ceil(p*N)`` units are marked whenever the limits allow it;
    * with ``align > 1`` the kept count is rounded up to a multiple of ``align`` (fewer units pruned, the
      highest-scoring marked ones are given back) so the pruned convs keep hardware-friendly widths.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
        raise ValueError(f'pruning ratio must be in (0, 1), got {ratio!r}')
    if scope not in SCOPES:
        raise ValueError(f'scope must be one of {SCOPES}, got {scope!r}')
    if isinstance(align, bool) or int(align) != align or align < 1:
        raise ValueError(f'align must be a positive integer, got {align!r}')
    if isinstance(max_layer_ratio, bool) or not isinstance(max_layer_ratio, (int, float)) or \
            not 0.0 < max_layer_ratio <= 1.0:
        raise ValueError(f'max_layer_ratio must be in (0, 1], got {max_layer_ratio!r}')
    if not scores:
        raise ValueError('no prunable units (is everything skipped?)')
    keys = list(scores)
    if scope == 'local':
        marked = {}
        for k in keys:
            n = scores[k].numel()
            n_pruned = min(math.ceil(round(ratio * n, 9)), max_pruned(n, max_layer_ratio))
            marked[k] = torch.sort(torch.sort(scores[k], stable=True).indices[:max(n_pruned, 0)]).values
    else:
        pool = normalized_scores(scores) if scope == 'global_normalized' else scores
        marked = _global_marks(pool, keys, ratio, max_layer_ratio)
    pruned = {}
    for k in keys:
        s, m = scores[k], marked[k]
        n = s.numel()
        n_pruned = n - _kept_count(n, m.numel(), align)
        if n_pruned < m.numel():
            # Give back the highest-scoring marked units (ties: the later index is given back first).
            ranked = m[torch.sort(s[m], stable=True).indices]
            m = torch.sort(ranked[:n_pruned]).values
        pruned[k] = m.to(torch.int64)
    return pruned


def kept_indices(n: int, pruned: torch.Tensor) -> torch.Tensor:
    """The complement of ``pruned`` in ``range(n)``, sorted."""
    mask = torch.ones(n, dtype=torch.bool)
    mask[pruned.cpu()] = False
    return torch.nonzero(mask).flatten()
