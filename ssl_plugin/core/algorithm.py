"""Algorithm 1 as a host-agnostic state machine: the BasicSR model and the MMagic hook only translate into it.

Stages: ``sparsity`` (γ inserted, S chosen by L1 norm, L_SIR grows on S) -> prune (merge γ, remove S, RSC) ->
``finetune`` (reconstruction + Temporal Finetuning against the unpruned teacher). Method ``l1`` is the paper's
L1-norm baseline: S is removed at the start and the run only finetunes. Method ``aligned`` is the ASSL-style baseline
(Zhang et al., NeurIPS 2021): the same stages on the aligned view of the topology, where each trunk's skip path is one
group with one γ per channel shared by every conv the residual additions tie to it, so the hidden state gets thinner.
"""
from __future__ import annotations

import copy
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from .criterion import SCOPES, l1_scores
from .losses import SIRLoss, TFLoss
from .options import unknown_key_message
from .registry import bare_model, describe
from .scaling import insert_scaling_factors, merge_scaling_factors, scaling_factors
from .selection import TARGETS, CostModel, example_clip, find_ratio, select, selection_report
from .sir import SparsityRegularizer, gamma_stats, stage_length
from .spec import SpecError, check_format, is_aligned
from .surgery import apply_spec, prune, unit_fields
from .temporal import HiddenStateRecorder, at_channels, frozen_teacher, teacher_hidden_states
from .topology import Topology

SPARSITY, FINETUNE = 'sparsity', 'finetune'
METHODS = ('ssl', 'l1', 'aligned')
#: What the optimizer keeps at the cut: 'fresh' (a new Adam, the measured default: see README "At pruning") or 'carry'
#: (every surviving parameter's moments and step, sliced to the kept indices: core/optim_state.py).
OPTIMIZER_AT_PRUNE = ('fresh', 'carry')


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
    #: Fraction of the prunable units removed; None (and left out) when a budget target chooses it.
    pruning_ratio: float | None = 0.5
    #: The measured winner on a trained BasicVSR (README, Results: Selection); 'global' is the paper's raw pool.
    scope: str = 'global_normalized'
    #: 1 here so narrow networks still prune unit by unit; the shipped option files set 8 (README, Speed).
    align: int = 1
    normalize: bool = True
    #: No layer loses more than this fraction of its units (1: only "at least one unit stays").
    max_layer_ratio: float = 0.8
    #: Budgets, each instead of pruning_ratio: dense / pruned MACs (on ``budget_size``) or params.
    target_mac_ratio: float | None = None
    target_params_ratio: float | None = None
    #: (frames, H, W) of the LR clip the MACs are counted on; default: the host's training clip.
    budget_size: list | None = None
    #: Parts the budget target leaves out of both sides of its ratio (e.g. ['spynet']: params as the paper counts).
    budget_exclude: list = field(default_factory=list)
    skip: list = field(default_factory=list)
    #: A dense checkpoint for the Temporal Finetuning teacher (default: the network at the end of the sparsity stage;
    #: required for TF in a run that starts from an already pruned checkpoint). Each host reads its own format.
    tf_teacher: str | None = None
    optimizer_at_prune: str = 'fresh'
    reg: RegConfig = field(default_factory=RegConfig)

    @classmethod
    def from_dict(cls, d: dict | None, where: str = 'ssl') -> 'SSLConfig':
        """Validate a user's options; every error names the offending key (``where`` prefixes it)."""
        d = dict(d or {})
        reg = dict(d.pop('reg', None) or {})
        known, known_reg = {f for f in cls.__dataclass_fields__ if f != 'reg'}, set(RegConfig.__dataclass_fields__)
        for k in d:
            if k not in known:
                raise ValueError(unknown_key_message(where, k, known | {'reg'}))
        for k in reg:
            if k not in known_reg:
                raise ValueError(unknown_key_message(f'{where}.reg', k, known_reg))
        targets = [t for t in TARGETS if d.get(t) is not None]
        if len(targets) > 1:
            raise ValueError(f'{where}: set one budget target, not both {targets[0]} and {targets[1]}')
        if targets and d.get('pruning_ratio') is not None:
            raise ValueError(f'{where}.{targets[0]} chooses the pruning ratio: leave out {where}.pruning_ratio '
                             '(or set it to None / ~ in a config that inherits one)')
        if targets:
            d['pruning_ratio'] = None
        cfg = cls(**d, reg=RegConfig(**reg))
        if cfg.method not in METHODS:
            raise ValueError(f'{where}.method must be one of {METHODS}, got {cfg.method!r}')
        if not targets and (not _is_number(cfg.pruning_ratio) or not 0 < cfg.pruning_ratio < 1):
            raise ValueError(f'{where}.pruning_ratio must be in (0, 1), got {cfg.pruning_ratio!r}'
                             + (' (or set ssl.target_mac_ratio / target_params_ratio)' if cfg.pruning_ratio is None
                                else ''))
        for t in targets:
            v = getattr(cfg, t)
            if not _is_number(v) or not v > 1:
                raise ValueError(f'{where}.{t} must be a number above 1 (dense / pruned), got {v!r}')
        if cfg.scope not in SCOPES:
            raise ValueError(f'{where}.scope must be one of {list(SCOPES)}, got {cfg.scope!r}')
        if not _is_number(cfg.max_layer_ratio) or not 0 < cfg.max_layer_ratio <= 1:
            raise ValueError(f'{where}.max_layer_ratio must be in (0, 1], got {cfg.max_layer_ratio!r}')
        if cfg.scope == 'local' and not targets and cfg.pruning_ratio > cfg.max_layer_ratio:
            raise ValueError(f'{where}.pruning_ratio {cfg.pruning_ratio} with scope local exceeds '
                             f'{where}.max_layer_ratio {cfg.max_layer_ratio}: every layer would be cut to the cap; '
                             'raise max_layer_ratio')
        b = cfg.budget_size
        if b is not None and (not isinstance(b, (list, tuple)) or len(b) != 3 or not all(
                isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in b)):
            raise ValueError(f'{where}.budget_size must be [frames, height, width] of the LR clip (positive '
                             f'integers), got {b!r}')
        if b is not None:
            cfg.budget_size = list(b)
        if cfg.optimizer_at_prune not in OPTIMIZER_AT_PRUNE:
            raise ValueError(f'{where}.optimizer_at_prune must be one of {OPTIMIZER_AT_PRUNE}, '
                             f'got {cfg.optimizer_at_prune!r}')
        if not isinstance(cfg.budget_exclude, (list, tuple)) or not all(
                isinstance(x, str) and x for x in cfg.budget_exclude):
            raise ValueError(f'{where}.budget_exclude must be a list of part names (e.g. [spynet]), '
                             f'got {cfg.budget_exclude!r}')
        if cfg.budget_exclude and not targets:
            raise ValueError(f'{where}.budget_exclude only applies to a budget target (target_mac_ratio / '
                             'target_params_ratio); with pruning_ratio it would be ignored')
        cfg.budget_exclude = list(cfg.budget_exclude)
        if not isinstance(cfg.normalize, bool):
            raise ValueError(f'{where}.normalize must be true or false, got {cfg.normalize!r}')
        if not isinstance(cfg.align, int) or isinstance(cfg.align, bool) or cfg.align < 1:
            raise ValueError(f'{where}.align must be a positive integer, got {cfg.align!r}')
        if not isinstance(cfg.skip, (list, tuple)) or not all(isinstance(s, str) for s in cfg.skip):
            raise ValueError(f'{where}.skip must be a list of glob patterns, got {cfg.skip!r}')
        if cfg.tf_teacher is not None and (not isinstance(cfg.tf_teacher, str) or not cfg.tf_teacher):
            raise ValueError(f'{where}.tf_teacher must be the path of a dense checkpoint, got {cfg.tf_teacher!r}')
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

    @property
    def carries_optimizer(self) -> bool:
        return self.optimizer_at_prune == 'carry'

    @property
    def aligned(self) -> bool:
        """Whether the method works on the aligned view of the topology (``describe(net, aligned=...)``)."""
        return self.method == 'aligned'

    @property
    def target(self) -> tuple[str, float] | None:
        """``(option, value)`` of the budget target, or None when ``pruning_ratio`` is given."""
        for t in TARGETS:
            if getattr(self, t) is not None:
                return t, getattr(self, t)
        return None

    def settings(self) -> dict:
        """What chose S, for logs and the selection report."""
        out = {'method': self.method, 'scope': self.scope, 'align': self.align, 'normalize': self.normalize,
               'max_layer_ratio': self.max_layer_ratio}
        if self.target:
            out[self.target[0]] = self.target[1]
            if self.budget_exclude:
                out['budget_exclude'] = list(self.budget_exclude)
        else:
            out['pruning_ratio'] = self.pruning_ratio
        return out

    @property
    def sparsity_iters(self) -> int:
        """Optimizer steps of the sparsity stage (0 for method ``l1``, which prunes at the start): the one source of
        this length for both hosts, their checks, configs and the demo (the same code as the regularizer's)."""
        if self.method == 'l1':
            return 0
        r = self.reg
        return stage_length(r.delta, r.interval, r.ceiling, r.stabilize_iter)


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
    """Drives Algorithm 1 for one network (plus identically-pruned copies such as an EMA network).

    The hosts only translate: they call :meth:`start`, wrap each training forward in :meth:`clip_losses` (which
    yields the SIR / TF terms to add), call :meth:`step` after each optimizer step and :meth:`prune` when it returns
    True, and save :meth:`state_dict`. :meth:`configure` hands in what the host builds from its own registries (the
    loss modules and a factory for a fresh dense network, from which the TF teacher is built).
    """

    def __init__(self, cfg: SSLConfig):
        self.cfg = cfg
        self.stage = SPARSITY
        self.pruned: dict[str, torch.Tensor] | None = None
        self.sir: SparsityRegularizer | None = None
        self.spec: dict | None = None
        self.teacher_state: dict | None = None
        self.unit_counts: dict[str, int] = {}  # units per layer at start(), for width_advice()
        self.ratio: float | None = None  # the pruning ratio S was chosen at (the budget target's, if any)
        self.report: dict | None = None  # selection_report() of S at start()
        self.cuts: dict = {}  # the last prune's surgery record (per conv: where its tensors came from); not saved
        self.sir_loss: nn.Module = SIRLoss()
        self.tf_loss: nn.Module | None = TFLoss()
        self.teacher_factory: Callable[[], nn.Module] | None = None
        self._teacher: nn.Module | None = None
        self._topology: tuple[weakref.ref, Topology] | None = None

    def configure(self, sir_loss: nn.Module | None = None, tf_loss: nn.Module | None = None,
                  teacher_factory: Callable[[], nn.Module] | None = None, tf: bool = True) -> 'SSLController':
        """The host's loss modules (built from its registry with the user's weights) and a callable returning a
        freshly built dense host network (the TF teacher's skeleton). ``tf=False``: finetune without TF."""
        if sir_loss is not None:
            self.sir_loss = sir_loss
        self.tf_loss = (tf_loss if tf_loss is not None else self.tf_loss) if tf else None
        self.teacher_factory = teacher_factory
        self._teacher = None
        return self

    def topology(self, net: nn.Module) -> Topology:
        """``describe(net)``, computed once per network object (it only changes with start / prune / restore)."""
        net = bare_model(net)
        if self._topology is None or self._topology[0]() is not net:
            self._topology = (weakref.ref(net), describe(net))
        return self._topology[1]

    def _forget_topology(self) -> None:
        self._topology = None

    # -- start -------------------------------------------------------------------------------------------------
    def start(self, net: nn.Module, others=(), keep_teacher: bool = True, size=None) -> None:
        """Choose S on the dense ``net``; method ``ssl`` inserts γ (also into ``others``), ``l1`` prunes at once.

        ``size``: (frames, H, W) of the host's LR training clip, where MACs are counted (for ``target_mac_ratio``
        and the report); ``cfg.budget_size`` overrides it. :attr:`report` holds the per-layer selection report."""
        net = bare_model(net)
        topology = describe(net, aligned=self.cfg.aligned)
        skipped = topology.skipped_keys(self.cfg.skip)
        scores = self.scores(net, topology)
        self.ratio, self.pruned, self.report = _broadcast(self.choose(net, topology, scores, size))
        self.unit_counts = {k: int(v.numel()) for k, v in scores.items()}
        self._forget_topology()
        if self.cfg.method == 'l1':
            self.prune(net, others, keep_teacher=keep_teacher)
            return
        for n in (net, *others):
            insert_scaling_factors(n, topology, skip_keys=skipped)
        r = self.cfg.reg
        self.sir = SparsityRegularizer(self.pruned, r.delta, r.interval, r.ceiling, r.stabilize_iter)

    @classmethod
    def from_pruned(cls, cfg: SSLConfig, spec: dict, dense: nn.Module) -> 'SSLController':
        """A new run whose starting network is an already pruned SSL checkpoint (e.g. pruned on REDS, finetuned on
        Vimeo-90K): it starts in the finetuning stage with that checkpoint's spec. ``dense`` is a freshly built dense
        host network (for the unit counts; it is not changed). The TF teacher, if any, comes from ``cfg.tf_teacher``
        (see :meth:`set_teacher_state`); without one the host turns TF off and says so."""
        spec = check_format(spec)
        c = cls(cfg)
        c.stage, c.spec = FINETUNE, spec
        topology = describe(bare_model(dense), aligned=is_aligned(spec))
        c.pruned = pruned_sets(spec, topology)
        c.unit_counts = {k: int(n) for k, n in unit_totals(spec, topology).items()}
        return c

    def scores(self, net: nn.Module, topology: Topology) -> dict:
        """L1 scores of every unit that ``skip`` does not protect."""
        skipped = topology.skipped_keys(self.cfg.skip)
        keys = [k for k in topology.keys() if k not in skipped]
        return l1_scores(bare_model(net), topology, keys=keys, normalize=self.cfg.normalize)

    def choose(self, net: nn.Module, topology: Topology, scores: dict, size=None) -> tuple[float, dict, dict]:
        """``(ratio, S, report)`` for these scores: at ``pruning_ratio``, or bisected to the budget target."""
        cfg = self.cfg
        size = cfg.budget_size or size
        if cfg.target and cfg.target[0] == 'target_mac_ratio' and size is None:
            raise ValueError('ssl.target_mac_ratio: no frame size to count MACs on; set ssl.budget_size: '
                             '[frames, height, width] of the LR clip')
        cost = CostModel.measure(net, topology, example_clip(net, topology, size) if size else None)
        ties = topology.width_ties() if topology.is_aligned else None
        if cfg.target:
            ratio, pruned, _ = find_ratio(scores, cost, net, topology, *cfg.target, cfg.scope, cfg.align,
                                          cfg.max_layer_ratio, ties=ties, exclude=cfg.budget_exclude)
        else:
            ratio = cfg.pruning_ratio
            pruned = select(scores, ratio, cfg.scope, cfg.align, cfg.max_layer_ratio, ties)
        return ratio, pruned, selection_report(net, topology, pruned, cost, ratio, cfg.settings(),
                                               exclude=cfg.budget_exclude)

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

    # -- training: the SSL loss terms of one clip -------------------------------------------------------------
    @property
    def uses_tf(self) -> bool:
        """Whether finetuning adds L_TF (a TF loss is configured and teacher weights are known)."""
        return self.tf_loss is not None and self.teacher_state is not None

    @contextmanager
    def clip_losses(self, net: nn.Module, lq: torch.Tensor):
        """Wrap the host's training forward of ``net`` on the clip ``lq``; the yielded dict holds, after the block,
        the SSL terms to add to the host's loss: ``'sir'`` (sparsity stage) or ``'tf'`` (finetuning with TF)."""
        terms: dict[str, torch.Tensor] = {}
        if self.stage == FINETUNE and self.uses_tf:
            topo = self.topology(net)
            target = teacher_hidden_states(self.teacher(lq.device), lq, topo.hidden, topo.hidden_residual)
            target = at_channels(target, self.hidden_channels(topo.hidden))
            with HiddenStateRecorder(net, topo.hidden, residual=topo.hidden_residual) as rec:
                yield terms
            terms['tf'] = self.tf_loss(rec.states, target)
            return
        yield terms
        if self.stage == SPARSITY and self.sir is not None:
            terms['sir'] = self.sir_loss(self.sir, scaling_factors(net, self.topology(net)))

    def regularization_loss(self, net: nn.Module) -> torch.Tensor | None:
        """L_SIR (unweighted) during the sparsity stage, else None: for code that drives the engine without a host."""
        if self.stage != SPARSITY or self.sir is None:
            return None
        return self.sir.loss(scaling_factors(net, self.topology(net)))

    def step(self) -> bool:
        """Advance one iteration; True when the sparsity stage has just finished and the host must call prune()."""
        if self.stage != SPARSITY or self.sir is None:
            return False
        return self.sir.step() == 'done'

    @property
    def prune_due(self) -> bool:
        return self.stage == SPARSITY and self.sir is not None and self.sir.done

    def hidden_channels(self, hidden: dict[str, str]) -> dict[str, list[int]]:
        """Per direction of ``hidden`` (direction -> trunk path), the teacher's hidden-state channels the pruned
        network kept: only for a trunk whose skip path was cut (method ``aligned``; :func:`.temporal.at_channels`)."""
        units = (self.spec or {}).get('units', {})
        return {d: units[p]['channels'] for d, p in hidden.items() if units.get(p, {}).get('kind') == 'aligned'}

    # -- the TF teacher ------------------------------------------------------------------------------------------
    def set_teacher_state(self, state: dict, where: str = 'tf_teacher') -> None:
        """Use ``state`` (a dense state dict of the host network) as the teacher's weights; checked strictly when a
        teacher factory is known, so a wrong file stops the run here, not at the first finetuning iteration."""
        state = {k: v.detach().cpu() for k, v in state.items()}
        if self.teacher_factory is not None:
            net = self.teacher_factory()
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise ValueError(f'{where}: not a dense checkpoint of this network: {e}') from e
        self.teacher_state = state
        self._teacher = None

    def teacher(self, device: torch.device | str | None = None) -> nn.Module:
        """The frozen unpruned network (eval, no grad), built once from :attr:`teacher_state` by the host factory."""
        if self.teacher_state is None:
            raise RuntimeError('Temporal Finetuning needs the unpruned teacher weights, but the SSL state holds none')
        if self.teacher_factory is None:
            raise RuntimeError('SSLController.configure(teacher_factory=...) was not called by the host')
        if self._teacher is None:
            net = self.teacher_factory()
            net.load_state_dict(self.teacher_state, strict=True)
            self._teacher = frozen_teacher(net)
        if device is not None and next(self._teacher.parameters()).device != torch.device(device):
            self._teacher.to(device)
        return self._teacher

    # -- prune ---------------------------------------------------------------------------------------------------
    def prune(self, net: nn.Module, others=(), keep_teacher: bool = True) -> dict:
        """Remove S from ``net`` and ``others`` identically (in place); keeps the unpruned ``net`` (γ merged) as the
        Temporal Finetuning teacher's weights unless a teacher is already set (``tf_teacher``). Returns the spec;
        :attr:`cuts` records where each pruned conv's tensors came from (for the optimizer state)."""
        net = bare_model(net)
        topology = describe(net, aligned=self.cfg.aligned)
        if keep_teacher and self.teacher_state is None:
            teacher = copy.deepcopy(net)
            merge_scaling_factors(teacher, topology)
            self.teacher_state = {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()}
            del teacher
        self.cuts = {}
        self.spec = prune(net, self.pruned, topology, record=self.cuts)
        for other in others:
            prune(bare_model(other), self.pruned, topology)
        self.stage = FINETUNE
        self._forget_topology()
        self._teacher = None
        return self.spec

    # -- resume ----------------------------------------------------------------------------------------------
    def restore_structure(self, net: nn.Module) -> None:
        """Give a freshly built dense ``net`` the structure this state describes (γ, or the pruned skeleton), so that
        saved weights and optimizer state load onto it."""
        net = bare_model(net)
        topology = describe(net, aligned=self.cfg.aligned)
        if self.stage == FINETUNE:
            if self.spec is None:
                raise SpecError('finetune stage without a pruning spec')
            apply_spec(net, self.spec)
        elif self.cfg.method != 'l1':
            insert_scaling_factors(net, topology, skip_keys=topology.skipped_keys(self.cfg.skip))
        self._forget_topology()

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (tensors, str, numbers; loadable with ``weights_only=True``)."""
        return {'cfg': self.cfg.to_dict(), 'stage': self.stage, 'pruned': self.pruned,
                'sir': self.sir.state_dict() if self.sir else None, 'spec': self.spec,
                'teacher_state': self.teacher_state, 'unit_counts': dict(self.unit_counts), 'ratio': self.ratio,
                'report': self.report}

    @classmethod
    def from_state_dict(cls, state: dict) -> 'SSLController':
        c = cls(SSLConfig.from_dict(state['cfg']))
        c.stage, c.pruned, c.spec, c.teacher_state = state['stage'], state['pruned'], state['spec'], \
            state['teacher_state']
        c.unit_counts = dict(state.get('unit_counts') or {})
        c.ratio, c.report = state.get('ratio', c.cfg.pruning_ratio), state.get('report')
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
            gammas = scaling_factors(net, self.topology(net))
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


def unit_totals(spec: dict, topology: Topology) -> dict[str, int]:
    """Dense unit count per scaling-factor key, as recorded in ``spec``."""
    return {key: int(spec['units'][u.path]['total'][f]) for u in topology.units for f, key in unit_fields(u).items()
            if u.path in spec['units']}


def pruned_sets(spec: dict, topology: Topology) -> dict[str, torch.Tensor]:
    """The unimportant set S a spec removed, per scaling-factor key (the complement of its kept indices)."""
    out = {}
    for u in topology.units:
        entry = spec['units'].get(u.path)
        if entry is None:
            raise SpecError(f'pruning spec has no entry for {u.path} (another architecture or depth?)')
        for f, key in unit_fields(u).items():
            n = int(entry['total'][f])
            mask = torch.ones(n, dtype=torch.bool)
            mask[torch.tensor(entry[f], dtype=torch.int64)] = False
            out[key] = torch.nonzero(mask).flatten()
    return out
