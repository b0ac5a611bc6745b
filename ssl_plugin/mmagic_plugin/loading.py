"""Which files an mmengine run loads the generator from, what they hold, and whether all of it loaded.

Why: mmengine loads the dense model without strict checking, through ``init_cfg=dict(type='Pretrained', ...)`` (on the
model or on the generator, applied by ``init_weights``) and ``load_from`` (``Runner.load_checkpoint(strict=False)``).
A checkpoint with another key prefix or width only logs warnings and leaves random weights, and S would be chosen on
noise. The hook re-reads the same files, resolved as mmengine resolves them, and checks them with the engine's
``check_loaded`` before choosing S.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from mmengine.model.weight_init import PretrainedInit
from mmengine.runner.checkpoint import _load_checkpoint

from ..core.loading import check_loaded

GENERATOR = 'generator.'
MODULE_PREFIX = re.compile(r'^module\.')  # what mmengine's loaders strip (their default revise_keys)


@dataclass
class DenseSource:
    """One file mmengine loads into the model, as mmengine applies it."""
    key: str                     # the config key that names it: model.init_cfg, model.generator.init_cfg, load_from
    path: str
    state: dict                  # the generator's tensors in it, keys relative to the generator
    outside: list = field(default_factory=list)  # its keys that mmengine would not load into the generator
    ssl: dict | None = None      # checkpoint['ssl'] (an SSL run's controller state), if any

    @property
    def where(self) -> str:
        return f'{self.key} ({self.path})'


def _pretrained(init_cfg) -> list[dict]:
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg] if init_cfg else []
    return [dict(c) for c in cfgs if isinstance(c, dict) and c.get('type') in ('Pretrained', PretrainedInit)]


def _read(path: str, prefix: str | None) -> tuple[dict, dict | None]:
    """The state dict mmengine's PretrainedInit / load_checkpoint would load from ``path``, and checkpoint['ssl']."""
    ckpt = _load_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
    ssl = ckpt.get('ssl') if isinstance(ckpt, dict) else None
    if prefix is not None:  # _load_checkpoint_with_prefix: only the keys under the prefix, without it
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, ssl
    return {MODULE_PREFIX.sub('', k): v for k, v in state.items()}, ssl


def _source(key: str, path: str, state: dict, ssl, at_model: bool) -> DenseSource:
    if not at_model:
        return DenseSource(key, path, dict(state), [], ssl)
    gen = {k[len(GENERATOR):]: v for k, v in state.items() if k.startswith(GENERATOR)}
    return DenseSource(key, path, gen, [k for k in state if not k.startswith(GENERATOR)], ssl)


def dense_sources(model, load_from: str | None = None) -> list[DenseSource]:
    """The files that load the generator of ``model`` (an ``SSLBasicVSR``), in mmengine's order: the generator's
    ``Pretrained`` init_cfg, the model's (applied after its children's), then ``load_from`` (not a resume)."""
    sources = []
    for key, module, at_model in (('model.generator.init_cfg', model.generator, False),
                                  ('model.init_cfg', model, True)):
        for cfg in _pretrained(getattr(module, 'init_cfg', None)):
            prefix = cfg.get('prefix')
            state, ssl = _read(cfg['checkpoint'], prefix)
            sources.append(_source(key, cfg['checkpoint'], state, ssl, at_model))
    if load_from:
        state, ssl = _read(load_from, None)
        sources.append(_source('load_from', load_from, state, ssl, True))
    return sources


def runner_dense_sources(runner, model) -> list[DenseSource]:
    """:func:`dense_sources` of the runner's model and its ``load_from`` (none when the run resumes)."""
    load_from = None if getattr(runner, '_resume', False) else getattr(runner, '_load_from', None)
    return dense_sources(model, load_from)


def check_generator_loaded(model, sources: list[DenseSource]) -> None:
    """Every tensor of the generator was loaded, with its shape, by one of ``sources`` (none: trained from scratch,
    nothing to check)."""
    if not sources:
        return
    check_loaded(model.generator.state_dict(), [(s.where, s.state) for s in sources],
                 foreign={s.where: s.outside for s in sources if s.outside and not s.state},
                 note='mmengine loads these files without strict checking and would leave random weights, on '
                      'which S would be chosen')
