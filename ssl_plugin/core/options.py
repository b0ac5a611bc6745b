"""Checks of a run's options that both hosts make the same way; each error names the key to change.

Why: a pruning run that starts with a wrong setting still "succeeds" hours later with a weaker model (nothing
finetuned, TF silently off). These checks turn such settings into an error before training starts.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

#: How alike (difflib ratio) an unknown key must be to one of ours to count as its misspelling. High enough that no key
#: of the hosts' own option files or configs trips it (tested), low enough for a dropped / doubled / swapped letter.
NEAR_MISS_CUTOFF = 0.8


def check_finetuning_left(sparsity_iters: int, total_iters: int, total_key: str, reg_key: str) -> None:
    """Pruning happens at the sparsity stage's last iteration: a run of ``total_iters`` must have iterations after it
    (``sparsity_iters`` counted from where the run is, in the host's iterations)."""
    if sparsity_iters >= total_iters:
        what = 'ends with the run: nothing would be finetuned' if sparsity_iters == total_iters else \
            'outlasts the run: nothing would be pruned'
        raise ValueError(f'{reg_key}: the sparsity stage takes {sparsity_iters} iterations and {what} '
                         f'({total_key} = {total_iters}); set {total_key} above {sparsity_iters} (sparsity + '
                         f'finetuning iterations) or shorten the stage ({reg_key})')


def closest(key: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known key most like ``key`` (case-insensitive), or None when none is at least ``cutoff`` alike."""
    by_lower = {k.lower(): k for k in known}
    match = difflib.get_close_matches(str(key).lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[match[0]] if match else None


def unknown_key_message(where: str, key: str, known: Iterable[str]) -> str:
    """``<where>.<key>: unknown option (did you mean <where>.<closest>?)`` with the known keys listed."""
    known = sorted(known)
    name = f'{where}.{key}' if where else str(key)
    match = closest(key, known)
    hint = f'did you mean {f"{where}.{match}" if where else match}? ' if match else ''
    return f'{name}: unknown option ({hint}known: {known})'


def _one_edit(a: str, b: str) -> bool:
    """One letter dropped, added, changed, or two neighbours swapped (what difflib's ratio misses on short keys such
    as ``ssl``)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def near_miss(key: str, ours: Iterable[str], cutoff: float = NEAR_MISS_CUTOFF) -> str | None:
    """The key of ``ours`` that ``key`` (not itself one of ours) misspells, or None."""
    ours = list(ours)
    low = str(key).lower()
    for k in ours:
        if low == k.lower() or _one_edit(low, k.lower()):
            return k
    return closest(key, ours, cutoff)


def check_near_misses(section, ours: Iterable[str], where: str = '', cutoff: float = NEAR_MISS_CUTOFF) -> None:
    """In a section the host owns (BasicSR's ``train:``, ``logger:``, the top level), a key that is not ours but
    nearly is (``tf_opts`` for ``tf_opt``) is a misspelling the host would silently ignore, leaving that SSL feature
    off: an error naming the closest key. Every other unknown key is the host's business and left alone."""
    ours = list(ours)
    for key in section or ():
        if not isinstance(key, str) or key in ours:
            continue
        match = near_miss(key, ours, cutoff)
        if match is not None:
            name = f'{where}.{key}' if where else key
            right = f'{where}.{match}' if where else match
            raise ValueError(f'{name}: unknown option; did you mean {right}? (the host would ignore it silently, '
                             'leaving that SSL setting at its default)')


def check_frozen_flow_under_ddp(frozen_iters, distributed: bool, find_unused: bool, frozen_key: str,
                                set_key: str) -> None:
    """While the flow network is frozen its parameters get no gradient; DDP registers them all (they must be trained
    later) and, unless told to look for unused parameters, stops at the second iteration with a reducer error that
    names neither option. Say so at start."""
    if distributed and frozen_iters and frozen_iters > 0 and not find_unused:
        raise ValueError(f'{frozen_key} = {frozen_iters} freezes the flow network for the first iterations, which '
                         'distributed training (DDP) accepts only when it looks for unused parameters: set '
                         f'{set_key} (or {frozen_key} = 0)')
