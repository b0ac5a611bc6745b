"""Did every tensor of a network load? One check for both hosts' loaders.

Why: S is chosen by the L1 norm of the loaded weights. A checkpoint whose keys carry another prefix, or that belongs to
a network of another width, loads nothing (or part) through a non-strict loader (mmengine's ``Pretrained`` init and
``load_from``, BasicSR's ``strict_load_g: false``) and leaves random weights behind: S would be chosen on noise. This
module compares a network's state dict with the state dict(s) that were loaded into it and raises, naming the file and
example keys, when a tensor of the network was not loaded.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

EXAMPLES = 3


def _shape(v) -> tuple:
    return tuple(v.shape) if hasattr(v, 'shape') else tuple(v)


@dataclass
class LoadProblems:
    """What a load of ``state`` into a network with state dict ``own`` leaves out (keys relative to the network)."""
    missing: list[str] = field(default_factory=list)      # the network's keys the state does not hold
    unexpected: list[str] = field(default_factory=list)   # the state's keys the network does not have
    mismatched: list[str] = field(default_factory=list)   # shared keys whose shapes differ, described

    @classmethod
    def of(cls, own: Mapping, state: Mapping) -> 'LoadProblems':
        return cls(missing=[k for k in own if k not in state], unexpected=[k for k in state if k not in own],
                   mismatched=[f'{k}: checkpoint {_shape(v)} vs network {_shape(own[k])}' for k, v in state.items()
                               if k in own and _shape(v) != _shape(own[k])])


def _examples(items: Sequence[str]) -> str:
    more = f', ... ({len(items)} in all)' if len(items) > EXAMPLES else ''
    return ', '.join(str(i) for i in items[:EXAMPLES]) + more


def check_loaded(own: Mapping, sources: Sequence[tuple[str, Mapping]], strict: bool = True, note: str = '',
                 foreign: Mapping[str, Sequence[str]] | None = None) -> None:
    """Raise ``ValueError`` unless every tensor of the network (state dict ``own``) is loaded with its shape.

    ``sources``: ``(where, state)`` for each state dict loaded into the network in turn (keys relative to the
    network; ``where`` names the option and file). A shape mismatch in any source is always an error (the tensor is
    skipped by non-strict loaders); with ``strict``, so are a network key that no source holds and a source key the
    network does not have. ``foreign``: per ``where``, keys of the file outside the network, shown as a hint when
    keys are missing (a wrong prefix shows there). ``note`` is appended to the message.
    """
    lines = []
    per_source = [(where, LoadProblems.of(own, state)) for where, state in sources]
    if strict and per_source:
        missing = [k for k in own if all(k in p.missing for _, p in per_source)]
        if missing:
            wheres = ' + '.join(where for where, _ in per_source)
            lines.append(f'{wheres}: {len(missing)} of the network\'s {len(own)} tensors were not loaded '
                         f'(missing, e.g. {_examples(missing)})')
            for where, keys in (foreign or {}).items():
                if keys:
                    lines.append(f'{where}: its keys look like {_examples(list(keys))} (another key prefix?)')
    for where, p in per_source:
        if p.mismatched:
            lines.append(f'{where}: tensor shapes do not fit the network (different num_feat / num_block, or a '
                         f'checkpoint of another architecture?): {"; ".join(p.mismatched[:EXAMPLES])}'
                         f'{f" (and {len(p.mismatched) - EXAMPLES} more)" if len(p.mismatched) > EXAMPLES else ""}')
        if strict and p.unexpected:
            lines.append(f'{where}: holds {len(p.unexpected)} tensors the network does not have '
                         f'(e.g. {_examples(p.unexpected)})')
    if lines:
        raise ValueError('; '.join(lines) + (f'. {note}' if note else ''))
