"""Algorithm 1 as a host-agnostic state machine: the BasicSR model and the MMagic hook only translate into it.

Stages: ``sparsity`` (γ inserted, S chosen by L1 norm, L_SIR grows on S) -> prune (merge γ, remove S, RSC) ->
``finetune`` (reconstruction + Temporal Finetuning against the unpruned teacher). Method ``l1`` is the paper's
L1-norm baseline: S is removed at the start and the run only finetunes.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .criterion import l1_scores, select_unimportant
from .registry import bare_model, describe
from .scaling import insert_scaling_factors, merge_scaling_factors, scaling_factors
from .sir import SparsityRegularizer, gamma_stats
from .spec import SpecError
from .surgery import apply_spec, prune

SPARSITY, FINETUNE = 'sparsity', 'finetune'
METHODS = ('ssl', 'l1')


@dataclass
class RegConfig:
    """SIR schedule: Δ (delta), T1 (interval), τ (ceiling), T2 (stabilize_iter); official-code defaults."""
    delta: float = 1e-4
    interval: int = 5
    ceiling: float = 0.1
    stabilize_iter: int = 14000


@dataclass
class SSLConfig:
    method: str = 'ssl'
    pruning_ratio: float = 0.5
    scope: str = 'global'
    align: int = 1
    normalize: bool = True
    skip: list = field(default_factory=list)
    reg: RegConfig = field(default_factory=RegConfig)

    @classmethod
    def from_dict(cls, d: dict | None, where: str = 'ssl') -> 'SSLConfig':
        """Validate a user's options; every error names the offending key (``where`` prefixes it)."""
        d = dict(d or {})
        reg = dict(d.pop('reg', None) or {})
        known, known_reg = {f for f in cls.__dataclass_fields__ if f != 'reg'}, set(RegConfig.__dataclass_fields__)
        for k in d:
            if k not in known:
                raise ValueError(f'{where}.{k}: unknown option (known: {sorted(known | {"reg"})})')
        for k in reg:
            if k not in known_reg:
                raise ValueError(f'{where}.reg.{k}: unknown option (known: {sorted(known_reg)})')
        cfg = cls(**d, reg=RegConfig(**reg))
        if cfg.method not in METHODS:
            raise ValueError(f'{where}.method must be one of {METHODS}, got {cfg.method!r}')
        if not isinstance(cfg.pruning_ratio, (int, float)) or not 0 < cfg.pruning_ratio < 1:
            raise ValueError(f'{where}.pruning_ratio must be in (0, 1), got {cfg.pruning_ratio!r}')
        if cfg.scope not in ('global', 'local'):
            raise ValueError(f"{where}.scope must be 'global' or 'local', got {cfg.scope!r}")
        if not isinstance(cfg.normalize, bool):
            raise ValueError(f'{where}.normalize must be true or false, got {cfg.normalize!r}')
        if not isinstance(cfg.align, int) or isinstance(cfg.align, bool) or cfg.align < 1:
            raise ValueError(f'{where}.align must be a positive integer, got {cfg.align!r}')
        if not isinstance(cfg.skip, (list, tuple)) or not all(isinstance(s, str) for s in cfg.skip):
            raise ValueError(f'{where}.skip must be a list of glob patterns, got {cfg.skip!r}')
        r = cfg.reg
        for name, ok in (('delta', _is_number(r.delta) and r.delta > 0),
                         ('interval', isinstance(r.interval, int) and r.interval >= 1),
                         ('ceiling', _is_number(r.ceiling) and r.ceiling > 0),
                         ('stabilize_iter', isinstance(r.stabilize_iter, int) and r.stabilize_iter >= 0)):
            if not ok:
                hint = " (YAML reads 1e-4 without a dot as a string: write 1.0e-4)" if isinstance(
                    getattr(r, name), str) else ''
                raise ValueError(f'{where}.reg.{name} is invalid: {getattr(r, name)!r}{hint}')
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _broadcast(obj):
    """Rank 0's value on every rank (identity when not distributed): all ranks prune the same S."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return obj


class SSLController:
    """Drives Algorithm 1 for one network (plus identically-pruned copies such as an EMA network)."""

    def __init__(self, cfg: SSLConfig):
        self.cfg = cfg
        self.stage = SPARSITY
        self.pruned: dict[str, torch.Tensor] | None = None
        self.sir: SparsityRegularizer | None = None
        self.spec: dict | None = None
        self.teacher_state: dict | None = None
        self.unit_counts: dict[str, int] = {}  # units per layer at start(), for width_advice()

    # -- start -------------------------------------------------------------------------------------------------
    def start(self, net: nn.Module, others=(), keep_teacher: bool = True) -> None:
        """Choose S on the dense ``net``; method ``ssl`` inserts γ (also into ``others``), ``l1`` prunes at once."""
        net = bare_model(net)
        topology = describe(net)
        skipped = topology.skipped_keys(self.cfg.skip)
        keys = [k for k in topology.keys() if k not in skipped]
        scores = l1_scores(net, topology, keys=keys, normalize=self.cfg.normalize)
        self.pruned = _broadcast(select_unimportant(scores, self.cfg.pruning_ratio, self.cfg.scope, self.cfg.align))
        self.unit_counts = {k: int(v.numel()) for k, v in scores.items()}
        if self.cfg.method == 'l1':
            self.prune(net, others, keep_teacher=keep_teacher)
            return
        for n in (net, *others):
            insert_scaling_factors(n, topology, skip_keys=skipped)
        r = self.cfg.reg
        self.sir = SparsityRegularizer(self.pruned, r.delta, r.interval, r.ceiling, r.stabilize_iter)

    def width_advice(self, multiple: int = 8) -> str | None:
        """A hint for the log when S leaves pruned layers at kept counts that are not a multiple of ``multiple``:
        convs at such widths run well below their MAC count on GPUs (tensor cores want multiples of 8) and CPUs
        (oneDNN computes in blocks of 8 or 16 channels; in the speed benchmark a BasicVSR keeping 19 of 64 channels
        was slower than one keeping 32). None when every pruned layer's count is a multiple, or before start()."""
        pruned = self.pruned or {}
        kept = {k: n - int(pruned[k].numel()) for k, n in self.unit_counts.items() if k in pruned and pruned[k].numel()}
        odd = {k: v for k, v in kept.items() if v % multiple}
        if not odd:
            return None
        examples = ', '.join(f'{k}: {v}' for k, v in list(odd.items())[:3])
        return (f'SSL: {len(odd)} of {len(kept)} pruned layers keep a unit count that is not a multiple of '
                f'{multiple} ({examples}{", ..." if len(odd) > 3 else ""}); convs at such widths are slower than '
                f'their MACs promise on GPUs and CPUs. `align: {multiple}` (or 16 for AVX-512 CPUs) rounds kept counts '
                f'up.')

    # -- sparsity stage ----------------------------------------------------------------------------------------
    def regularization_loss(self, net: nn.Module) -> torch.Tensor | None:
        """L_SIR during the sparsity stage, else None."""
        if self.stage != SPARSITY or self.sir is None:
            return None
        net = bare_model(net)
        return self.sir.loss(scaling_factors(net, describe(net)))

    def step(self) -> bool:
        """Advance one iteration; True when the sparsity stage has just finished and the host must call prune()."""
        if self.stage != SPARSITY or self.sir is None:
            return False
        return self.sir.step() == 'done'

    @property
    def prune_due(self) -> bool:
        return self.stage == SPARSITY and self.sir is not None and self.sir.done

    # -- prune ---------------------------------------------------------------------------------------------------
    def prune(self, net: nn.Module, others=(), keep_teacher: bool = True) -> dict:
        """Remove S from ``net`` and ``others`` identically (in place); keeps the unpruned ``net`` (γ merged) as the
        Temporal Finetuning teacher's weights. Returns the spec."""
        net = bare_model(net)
        topology = describe(net)
        if keep_teacher:
            teacher = copy.deepcopy(net)
            merge_scaling_factors(teacher, topology)
            self.teacher_state = {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()}
            del teacher
        self.spec = prune(net, self.pruned, topology)
        for other in others:
            prune(bare_model(other), self.pruned, topology)
        self.stage = FINETUNE
        return self.spec

    # -- resume ----------------------------------------------------------------------------------------------
    def restore_structure(self, net: nn.Module) -> None:
        """Give a freshly built dense ``net`` the structure this state describes (γ, or the pruned skeleton), so that
        saved weights and optimizer state load onto it."""
        net = bare_model(net)
        topology = describe(net)
        if self.stage == FINETUNE:
            if self.spec is None:
                raise SpecError('finetune stage without a pruning spec')
            apply_spec(net, self.spec)
        elif self.cfg.method == 'ssl':
            insert_scaling_factors(net, topology, skip_keys=topology.skipped_keys(self.cfg.skip))

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (tensors, str, numbers; loadable with ``weights_only=True``)."""
        return {'cfg': self.cfg.to_dict(), 'stage': self.stage, 'pruned': self.pruned,
                'sir': self.sir.state_dict() if self.sir else None, 'spec': self.spec,
                'teacher_state': self.teacher_state}

    @classmethod
    def from_state_dict(cls, state: dict) -> 'SSLController':
        c = cls(SSLConfig.from_dict(state['cfg']))
        c.stage, c.pruned, c.spec, c.teacher_state = state['stage'], state['pruned'], state['spec'], \
            state['teacher_state']
        c.sir = SparsityRegularizer.from_state_dict(state['sir']) if state['sir'] else None
        return c

    # -- logging ---------------------------------------------------------------------------------------------
    def log_values(self, net: nn.Module, per_layer: bool = True, gamma: bool = True) -> dict[str, float]:
        """Scalars to log (each host adds its own prefix): ``stage`` (0 sparsity, 1 finetune), ``num_pruned`` (|S|),
        and during sparsity ``alpha``, ``gamma_pruned`` / ``gamma_kept`` (mean |γ| over all pruned / kept units) and,
        with ``per_layer``, ``gamma_pruned/<key>`` / ``gamma_kept/<key>`` (the data of the paper's supplementary
        Fig. 1; NaN where a side is empty). ``gamma=False`` leaves out every γ value: they cost one device-to-host
        copy per layer, the rest is host-side state."""
        out = {'stage': 0.0 if self.stage == SPARSITY else 1.0}
        if self.pruned is not None:
            out['num_pruned'] = float(sum(v.numel() for v in self.pruned.values()))
        if self.stage == SPARSITY and self.sir is not None:
            out['alpha'] = self.sir.current_alpha()
            if not gamma:
                return out
            net = bare_model(net)
            gammas = scaling_factors(net, describe(net))
            stats = gamma_stats(gammas, self.pruned)
            for side, col in (('pruned', 0), ('kept', 1)):
                total = count = 0.0
                for key, g in gammas.items():
                    n = self.pruned[key].numel() if key in self.pruned else 0
                    n = n if side == 'pruned' else g.numel() - n
                    if n:
                        total += stats[key][col] * n
                        count += n
                out[f'gamma_{side}'] = total / count if count else float('nan')
            if per_layer:
                for key, (p, k) in stats.items():
                    out[f'gamma_pruned/{key}'] = p
                    out[f'gamma_kept/{key}'] = k
        return out
