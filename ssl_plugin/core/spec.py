"""Pruning spec: the JSON-able description of a pruned network (architecture, kept indices per unit, format version).

A pruned model is a state dict plus this spec: rebuild the skeleton with ``apply_spec(fresh_host_network, spec)`` and
the pruned state dict loads strictly. Nothing is pickled.

Format 2 adds the kinds of method ``aligned``: ``aligned`` (a trunk's kept skip-path channels, ``channels``) and
``aligned_residual`` (a block inside it: only its kept inner filters, ``mid``; its input / output channels are the
group's). Format 1 specs (no such kinds) still load unchanged.
"""
from __future__ import annotations

import json

FORMAT_VERSION = 2
READS = (1, 2)
ALIGNED_KINDS = ('aligned', 'aligned_residual')
KIND = {'ResidualUnit': 'residual', 'PixelShuffleUnit': 'pixel_shuffle', 'PlainUnit': 'plain',
        'AlignedGroup': 'aligned'}
FIELDS = {'residual': ('in', 'mid', 'out'), 'pixel_shuffle': ('groups',), 'plain': ('out',), 'aligned': ('channels',),
          'aligned_residual': ('mid',)}


def kind_of(unit) -> str:
    """The spec kind of a topology unit (a residual unit inside an aligned group is ``aligned_residual``)."""
    if type(unit).__name__ == 'ResidualUnit' and getattr(unit, 'group', None) is not None:
        return 'aligned_residual'
    return KIND[type(unit).__name__]


def is_aligned(spec: dict) -> bool:
    """Whether ``spec`` (already checked) describes an aligned pruning (its topology is the aligned view)."""
    return any(e['kind'] in ALIGNED_KINDS for e in spec['units'].values())


class SpecError(ValueError):
    """A pruning spec that is malformed or does not fit the network it is applied to."""


def make_spec(arch: str, units: dict[str, dict]) -> dict:
    """Format 2 only where it is needed (aligned kinds), so a plain SSL spec still loads in a format-1 reader."""
    aligned = any(e['kind'] in ALIGNED_KINDS for e in units.values())
    return {'format_version': FORMAT_VERSION if aligned else 1, 'arch': arch, 'units': units}


def check_format(spec) -> dict:
    """The spec as a dict, or :class:`SpecError` naming what is malformed (also for non-JSON text)."""
    if isinstance(spec, (str, bytes)):
        try:
            spec = json.loads(spec)
        except ValueError as e:
            raise SpecError(f'a pruning spec must be JSON: {e}') from e
    if not isinstance(spec, dict) or 'units' not in spec or 'arch' not in spec:
        raise SpecError('a pruning spec is a dict with "format_version", "arch" and "units"')
    version = spec.get('format_version')
    if type(version) is not int or version not in READS:
        raise SpecError(f'pruning spec format_version {version!r} is not supported '
                        f'(this ssl_plugin reads {", ".join(map(str, READS))})')
    if not isinstance(spec['units'], dict):
        raise SpecError(f'pruning spec "units" must map unit paths to entries, got {type(spec["units"]).__name__}')
    for path, entry in spec['units'].items():
        if not isinstance(entry, dict):
            raise SpecError(f'unit {path}: entry must be a dict, got {type(entry).__name__}')
        kind = entry.get('kind')
        if kind not in FIELDS or (version < 2 and kind in ALIGNED_KINDS):
            raise SpecError(f'unit {path}: unknown kind {kind!r}' + (
                f' in a format_version {version} spec' if kind in ALIGNED_KINDS else ''))
        for f in FIELDS[kind]:
            idx = entry.get(f)
            if not isinstance(idx, list) or not idx or any(type(i) is not int or i < 0 for i in idx) \
                    or idx != sorted(set(idx)):
                raise SpecError(f'unit {path}: "{f}" must be a non-empty sorted list of distinct ints >= 0')
        if not isinstance(entry.get('total'), dict):
            raise SpecError(f'unit {path}: missing "total" (the dense sizes)')
    return spec


def dumps(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)
