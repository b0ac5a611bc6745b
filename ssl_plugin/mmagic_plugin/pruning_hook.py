"""``SSLPruningHook``: drives Algorithm 1 (the engine's ``SSLController``) from an mmengine runner.

* ``before_train``: a new run chooses S on the (pretrained) dense generator and inserts γ (method ``ssl``) or prunes at
  once (``l1``), then rebuilds DDP / optimizer / schedulers so the new parameters are trained.
* every optimizer step: the α schedule advances; when the sparsity stage ends the generator is
  pruned in place and the training state rebuilt (learning rates continue, SPyNet stays in the optimizer).
* checkpoints: the controller state (S, α, spec, teacher weights; tensors and lists only) goes into
  ``checkpoint['ssl']``; loading such a checkpoint (``--resume``, ``load_from``, ``tools/test.py``) first gives the
  freshly built dense generator that structure, so the weights, optimizer and scheduler states load onto it.
* logging: stage, α, |S| and mean γ to the message hub (the log line), per-unit γ statistics to the visualizer; the γ
  values are read from the device only at the iterations the LoggerHook prints or the visualizer records.
"""
from __future__ import annotations

import math

from mmagic.registry import HOOKS, MODELS
from mmengine.hooks import EMAHook, Hook, LoggerHook

from ..core import count_params
from ..core.algorithm import FINETUNE, SPARSITY, SSLController
from .rebuild import TrainStateRebuilder, bare_runner_model
from .ssl_basicvsr import SSLBasicVSR

CHECKPOINT_KEY = 'ssl'
SPARSITY_SCALARS = ('train/loss_sir', 'train/ssl/alpha', 'train/ssl/gamma_pruned', 'train/ssl/gamma_kept')


@HOOKS.register_module()
class SSLPruningHook(Hook):
    """Runs the SSL stages for an ``SSLBasicVSR`` model.

    Args:
        interval (int | None): every how many iterations the per-unit γ statistics go to the visualizer
            (default: the LoggerHook's interval).
    """

    priority = 'LOW'  # after ParamSchedulerHook (LOW, registered first), before CheckpointHook (VERY_LOW)

    def __init__(self, interval: int | None = None):
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise ValueError(f'SSLPruningHook.interval must be a positive integer, got {interval!r}')
        self.interval = interval

    # -- helpers -----------------------------------------------------------------------------------------------
    @staticmethod
    def _model(runner) -> SSLBasicVSR:
        model = bare_runner_model(runner)
        if not isinstance(model, SSLBasicVSR):
            raise TypeError(f"SSLPruningHook needs model type='SSLBasicVSR' (mmagic's BasicVSR plus the SSL losses), "
                            f"got {type(model).__name__}: set model=dict(type='SSLBasicVSR', ssl=dict(...))")
        return model

    def _log_interval(self, runner) -> int:
        if self.interval is None:
            self.interval = next((h.interval for h in runner.hooks if type(h).__name__ == 'LoggerHook'), 50)
        return self.interval

    @staticmethod
    def _fresh_generator(model: SSLBasicVSR):
        """A newly built dense generator on the model's device (for loading a checkpoint into a changed model)."""
        device = next(model.generator.parameters()).device
        return MODELS.build(model._generator_cfg).to(device)

    # -- run -------------------------------------------------------------------------------------------------------
    def before_run(self, runner) -> None:
        self._model(runner)
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) or 'ExponentialMovingAverage' in type(hook).__name__:
                raise NotImplementedError(f'SSLPruningHook changes the network mid-run; {type(hook).__name__} keeps '
                                          'a copy of the dense network that it cannot follow: remove it')

    def before_train(self, runner) -> None:
        model = self._model(runner)
        ctrl = model.ssl_controller
        if ctrl is None:
            ctrl = SSLController(model.ssl_cfg)
            state = TrainStateRebuilder(runner)
            ctrl.start(model.generator)
            model.ssl_controller = ctrl
            # fix_iter counts from the start of the SSL run, not from a pretrained checkpoint's step counter.
            model.step_counter.fill_(runner.iter)
            state.rebuild(next_iter=runner.iter)
            runner.logger.info(f'SSL: started ({ctrl.cfg.method}, pruning_ratio {ctrl.cfg.pruning_ratio}, '
                               f'scope {ctrl.cfg.scope}); |S| = {self._num_pruned(ctrl)} units')
            advice = ctrl.width_advice()
            if advice:
                runner.logger.warning(advice)
            if ctrl.stage == FINETUNE:
                self._log_pruned(runner, model, None)
        elif ctrl.prune_due:  # a checkpoint saved between the end of the sparsity stage and the prune
            self._prune(runner, model, ctrl, next_iter=runner.iter)
        if ctrl.stage == SPARSITY and ctrl.sir is not None:
            steps = ctrl.sir.total_iters() - ctrl.sir.iter
            at = runner.iter + steps * getattr(runner.optim_wrapper, '_accumulative_counts', 1)
            runner.logger.info(f'SSL: sparsity stage prunes after iteration {at} (of {runner.max_iters})')
            if at > runner.max_iters:
                runner.logger.warning(f'SSL: the run ends (max_iters={runner.max_iters}) before the sparsity stage '
                                      f'does ({at}): no pruning will happen in this run')

    def _logger_prints(self, runner, batch_idx: int) -> bool:
        """Whether a LoggerHook writes a log line after this iteration: mmengine 0.10.7's own condition (every
        ``interval`` inner iterations, and at the end of an epoch unless ``ignore_last`` drops it)."""
        for hook in runner.hooks:
            if not isinstance(hook, LoggerHook):
                continue
            if self.every_n_inner_iters(batch_idx, hook.interval):
                return True
            if self.end_of_epoch(runner.train_dataloader, batch_idx) and (
                    not hook.ignore_last or len(runner.train_dataloader) <= hook.interval):
                return True
        return False

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        # Values in effect for this iteration's loss; LoggerHook reads them after the iteration. The γ statistics
        # (a device-to-host copy per layer) only where a log line or the visualizer takes them.
        model = self._model(runner)
        per_key_due = self.every_n_train_iters(runner, self._log_interval(runner)) or runner.iter == 0
        gamma_due = per_key_due or self._logger_prints(runner, batch_idx)
        values = model.ssl_controller.log_values(model.generator, per_layer=per_key_due, gamma=gamma_due)
        hub = runner.message_hub
        for name in ('stage', 'alpha', 'gamma_pruned', 'gamma_kept'):
            if name in values and not math.isnan(values[name]):
                hub.update_scalar(f'train/ssl/{name}', values[name])
        per_key = {f'ssl/{k}': v for k, v in values.items() if '/' in k and not math.isnan(v)}
        if per_key:
            runner.visualizer.add_scalars(per_key, step=runner.iter + 1)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        model = self._model(runner)
        # The α schedule counts optimizer steps (one per iteration unless gradients accumulate over iterations).
        if not runner.optim_wrapper.should_update():
            return
        if model.ssl_controller.step():
            self._prune(runner, model, model.ssl_controller, next_iter=runner.iter + 1)

    def _prune(self, runner, model: SSLBasicVSR, ctrl: SSLController, next_iter: int) -> None:
        state = TrainStateRebuilder(runner)
        dense = count_params(model.generator)
        ctrl.prune(model.generator)
        model.reset_teacher()
        state.rebuild(next_iter=next_iter)
        # Sparsity-stage scalars would otherwise be logged with their last value for the rest of the run.
        for key in SPARSITY_SCALARS:
            runner.message_hub.log_scalars.pop(key, None)
        self._log_pruned(runner, model, dense)

    def _log_pruned(self, runner, model, dense: int | None) -> None:
        pruned = count_params(model.generator)
        before = f'{dense} -> ' if dense is not None else ''
        runner.logger.info(f'SSL: pruned at iteration {runner.iter}; generator parameters {before}{pruned}; '
                           'finetuning with Temporal Finetuning from here on')

    @staticmethod
    def _num_pruned(ctrl) -> int:
        return int(sum(v.numel() for v in (ctrl.pruned or {}).values()))

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        ctrl = self._model(runner).ssl_controller
        if ctrl is not None:
            checkpoint[CHECKPOINT_KEY] = ctrl.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:  # a dense checkpoint (e.g. the pretrained model to prune): nothing to restore
            return
        model = self._model(runner)
        ctrl = SSLController.from_state_dict(state)
        train_state = TrainStateRebuilder(runner)
        if model.ssl_controller is not None:  # the generator was already changed: start from a dense one
            model.generator = self._fresh_generator(model)
        ctrl.restore_structure(model.generator)
        model.ssl_controller = ctrl
        model.reset_teacher()
        train_state.rebuild()
        runner.logger.info(f'SSL: restored the {ctrl.stage}-stage structure from the checkpoint')
