"""Rebuild the runner's training state after the network's parameters changed (γ inserted, or the network pruned).

mmengine builds the optimizer wrapper and parameter schedulers once, from the parameters the model has at that moment.
After a structural change they point at parameters that no longer exist (or miss new ones), and a DDP wrapper reduces
the wrong set. :class:`TrainStateRebuilder` snapshots the old state *keyed by parameter name* before the change and,
after it, builds everything again from the runner's own config and carries the state over:

* the DDP wrapper is re-created with ``runner.wrap_model`` (its reducer only knows the parameters it was built on);
* the optimizer wrapper is rebuilt with ``runner.build_optim_wrapper(cfg.optim_wrapper)`` while every parameter is
  temporarily trainable, because ``DefaultOptimWrapperConstructor`` drops ``requires_grad=False`` parameters and
  mmagic's ``fix_iter`` freezes SPyNet for the first iterations (it would never be trained again);
* per parameter group hyper-parameters (``lr``, ``initial_lr``, ...) are copied from the old group that held the same
  parameter names, so the learning-rate curve stays continuous whatever the grouping (``paramwise_cfg`` makes one
  group per tensor); mmengine's ``base_param_settings`` pseudo-group (what ``base_lr`` logs) is carried over too;
* optimizer state (Adam moments) moves with every parameter object that survived the change unchanged, and an AMP
  wrapper keeps its loss scale;
* parameter schedulers are rebuilt from ``cfg.param_scheduler`` and get the old schedulers' state, with their
  per-group lists (``base_values``, ``_last_value``) remapped by parameter name.
"""
from __future__ import annotations

import copy
import logging
from collections import Counter
from contextlib import contextmanager

from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import nn

from ..core import optim_state

#: Scheduler state that holds one entry per parameter group (mmengine _ParamScheduler and ReduceOnPlateau).
PER_GROUP_STATE = ('base_values', '_last_value', 'min_values')


def bare_runner_model(runner) -> nn.Module:
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


@contextmanager
def quiet(logger, level: int = logging.WARNING):
    """Silence INFO while rebuilding: the optimizer constructor re-logs every parameter's options at each rebuild."""
    old = logger.level
    logger.setLevel(max(old, level))
    try:
        yield
    finally:
        logger.setLevel(old)


@contextmanager
def all_trainable(module: nn.Module):
    """Temporarily set ``requires_grad`` on every parameter (restored afterwards, per parameter object)."""
    frozen = [p for p in module.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def has_tied_parameters(module: nn.Module) -> bool:
    """Whether one parameter is registered under several names (an aligned group's γ on every writer conv)."""
    return sum(1 for _ in module.named_parameters(remove_duplicate=False)) != sum(1 for _ in module.parameters())


class TrainStateRebuilder:
    """Snapshot of the runner's optimizer / scheduler state by parameter name; ``rebuild`` applies it to new ones."""

    def __init__(self, runner):
        self.runner = runner
        self.active = isinstance(runner.optim_wrapper, (OptimWrapper, OptimWrapperDict))
        if not self.active:  # test / val: nothing was built for training
            return
        if isinstance(runner.optim_wrapper, OptimWrapperDict) or isinstance(runner.param_schedulers, dict):
            raise NotImplementedError('SSLPruningHook supports one optimizer wrapper (mmagic BasicVSR uses one); '
                                      'an OptimWrapperDict / per-optimizer param_scheduler dict is not supported')
        cfg = runner.cfg
        for key, built in (('optim_wrapper', True), ('param_scheduler', bool(runner.param_schedulers))):
            if built and cfg.get(key) is None:
                raise RuntimeError(f'SSLPruningHook rebuilds the optimizer and schedulers after changing the network '
                                   f'and needs `{key}` in the runner config: build the runner with '
                                   'Runner.from_cfg(cfg) (as mmagic tools/train.py does), or pass cfg= to Runner')
        model = bare_runner_model(runner)
        self.names = {id(p): n for n, p in model.named_parameters()}
        wrapper = runner.optim_wrapper
        self.old_groups, self.group_of, self.old_pseudo = [], {}, None
        for i, group in enumerate(wrapper.param_groups):  # includes the base_param_settings pseudo-group, if any
            if group is wrapper.base_param_settings:
                self.old_pseudo = i
            else:
                self.group_of.update({self.names[id(p)]: i for p in group['params'] if id(p) in self.names})
            self.old_groups.append({k: copy.deepcopy(v) for k, v in group.items() if k != 'params'})
        self.old_state = {self.names[id(p)]: (p, s) for p, s in wrapper.optimizer.state.items()
                          if id(p) in self.names}
        self.old_schedulers = [copy.deepcopy(s.state_dict()) for s in runner.param_schedulers or []]

    # ------------------------------------------------------------------------------------------------------------
    def _match(self, pseudo: bool, names: list[str]) -> int | None:
        """Index of the old group that held most of ``names`` (or the old pseudo-group for the new one)."""
        if pseudo:
            return self.old_pseudo
        votes = Counter(self.group_of[n] for n in names if n in self.group_of)
        return votes.most_common(1)[0][0] if votes else None

    def rebuild(self, next_iter: int | None = None, cuts: dict | None = None, net: nn.Module | None = None,
                prefix: str = '', carry: bool = True) -> None:
        """Re-wrap DDP, rebuild optimizer wrapper and schedulers, carry state over; ``next_iter`` is the iteration
        the loop runs next (for the wrapper's gradient-accumulation counters; default ``runner.iter``, read only when
        training, since reading it outside training builds the train loop). After a prune, ``cuts`` (the
        controller's surgery record for ``net``, whose parameters are named ``prefix + name`` in the model) lets the
        cut tensors keep their sliced optimizer state (core's rule, as on BasicSR); ``carry=False`` (``ssl.
        optimizer_at_prune: fresh``) starts every parameter under ``prefix`` with a fresh optimizer state instead."""
        runner = self.runner
        model = bare_runner_model(runner)
        with all_trainable(model), quiet(runner.logger):
            if is_model_wrapper(runner.model):
                runner.model = runner.wrap_model(copy.deepcopy(runner.cfg.get('model_wrapper_cfg')), model)
            if not self.active:
                return
        optim_cfg = copy.deepcopy(runner.cfg.optim_wrapper)
        tied = has_tied_parameters(model) and optim_cfg.get('paramwise_cfg') is not None
        if tied:
            # Method aligned ties one γ to several convs: the paramwise constructor visits it once per conv and must
            # add it once (mmengine's own option; it warns per skipped duplicate, which is expected here).
            optim_cfg['paramwise_cfg'] = dict(optim_cfg['paramwise_cfg'], bypass_duplicate=True)
        with all_trainable(model), quiet(runner.logger, logging.ERROR if tied else logging.WARNING):
            old_wrapper = runner.optim_wrapper
            runner.optim_wrapper = runner.build_optim_wrapper(optim_cfg)
        wrapper = runner.optim_wrapper
        if hasattr(old_wrapper, 'loss_scaler') and hasattr(wrapper, 'loss_scaler'):  # AMP: keep the current scale
            wrapper.loss_scaler.load_state_dict(old_wrapper.loss_scaler.state_dict())
        saved, runner.param_schedulers = runner.param_schedulers, None
        runner.scale_lr(wrapper, runner.auto_scale_lr)  # as Runner.train does before building schedulers
        runner.param_schedulers = saved

        params = dict(model.named_parameters())
        names = {id(p): n for n, p in params.items()}
        # Optimizer state follows every parameter object that survived unchanged.
        for name, (old_p, state) in self.old_state.items():
            if params.get(name) is old_p and (carry or not name.startswith(prefix)):
                wrapper.optimizer.state[old_p] = state
        if cuts is not None and not carry:
            runner.logger.info('SSL: a fresh optimizer state for the finetuning stage (ssl.optimizer_at_prune: fresh)')
        elif cuts:
            snap = {n[len(prefix):]: st for n, (_, st) in self.old_state.items() if n.startswith(prefix)}
            carried, dropped = optim_state.carried_state(snap, net, cuts)
            n = optim_state.load_carried(wrapper.optimizer, net, carried)
            runner.logger.info(f'SSL: optimizer state carried over for {n} of {sum(1 for _ in net.parameters())} '
                               'generator parameters')
            if dropped:
                runner.logger.warning(f'SSL: optimizer state entries not carried (unknown kind): {dropped[:4]}')
        # Schedulers: fresh ones from the config (their construction steps and resets group values) ...
        cfg_sched = runner.cfg.get('param_scheduler')
        if cfg_sched is not None and self.old_schedulers:
            with quiet(runner.logger):
                runner.param_schedulers = runner.build_param_scheduler(copy.deepcopy(cfg_sched))
        fresh_lists = [{k: list(getattr(s, k)) for k in PER_GROUP_STATE if isinstance(getattr(s, k, None), list)}
                       for s in runner.param_schedulers or []]
        # ... then every group gets the hyper-parameters of the old group that held its parameters.
        mapping, ref = [], None
        for group in wrapper.param_groups:
            pseudo = group is wrapper.base_param_settings
            group_names = [names[id(p)] for p in group['params'] if id(p) in names] if not pseudo else []
            j = self._match(pseudo, group_names)
            mapping.append(j)
            if j is not None:
                group.update(copy.deepcopy(self.old_groups[j]))
                if ref is None and not pseudo:
                    ref = self.old_groups[j]
        for group, j in zip(wrapper.param_groups, mapping):
            # A group with no old counterpart (new parameters): same position on the schedule as the others.
            if j is None and ref is not None and ref.get('initial_lr') and 'initial_lr' in group:
                group['lr'] = group['initial_lr'] * ref['lr'] / ref['initial_lr']
        for sched, old, fresh in zip(runner.param_schedulers or [], self.old_schedulers, fresh_lists):
            sched.load_state_dict({k: v for k, v in old.items() if k != 'optimizer'})
            for k in PER_GROUP_STATE:
                if k in old and k in fresh:
                    setattr(sched, k, [copy.deepcopy(old[k][j]) if j is not None else fresh[k][i]
                                       for i, j in enumerate(mapping)])
        wrapper.initialize_count_status(runner.model, runner.iter if next_iter is None else next_iter,
                                        runner.max_iters)
        del old_wrapper
