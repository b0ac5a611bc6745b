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
import os

from mmagic.registry import HOOKS, MODELS
from mmengine.hooks import EMAHook, Hook, LoggerHook
from mmengine.runner.checkpoint import _load_checkpoint

from ..core import checkpoint as core_ckpt
from ..core import count_params, describe
from ..core import selection as core_selection
from ..core.algorithm import FINETUNE, SPARSITY, SSLController
from ..core.io import atomic_write_text
from ..core.options import check_finetuning_left, check_frozen_flow_under_ddp
from .checks import check_config_schedule, ddp_finds_unused_parameters
from .loading import check_generator_loaded, runner_dense_sources
from .rebuild import TrainStateRebuilder, bare_runner_model
from .ssl_basicvsr import SSLBasicVSR, reject_unknown_arguments

CHECKPOINT_KEY = 'ssl'
#: The per-layer selection report, written into the work dir (beside the checkpoints) when S is chosen.
REPORT_FILE = 'ssl_selection.json'
SPARSITY_SCALARS = ('train/loss_sir', 'train/ssl/alpha', 'train/ssl/gamma_pruned', 'train/ssl/gamma_kept')


def _get(cfg, key, default=None):
    if cfg is None:
        return default
    return cfg.get(key, default) if hasattr(cfg, 'get') else getattr(cfg, key, default)


def budget_size(cfg, topology) -> list[int] | None:
    """(frames, H, W) of the LR training clip from an mmengine config: the train dataset's ``num_input_frames`` and
    the pipeline's ``PairedRandomCrop`` ``gt_patch_size`` / the network's scale; None when the config does not say
    (then ``model.ssl.budget_size`` must, for a MAC target)."""
    dataset = _get(_get(cfg, 'train_dataloader'), 'dataset')
    while _get(dataset, 'dataset') is not None:  # RepeatDataset and other wrappers
        dataset = _get(dataset, 'dataset')
    frames = _get(dataset, 'num_input_frames')
    crop = next((_get(t, 'gt_patch_size') for t in (_get(dataset, 'pipeline') or [])
                 if _get(t, 'type') == 'PairedRandomCrop'), None)
    if not isinstance(frames, int) or frames < 2 or not crop:
        return None
    return core_selection.lr_size(frames, crop, topology)


@HOOKS.register_module()
class SSLPruningHook(Hook):
    """Runs the SSL stages for an ``SSLBasicVSR`` model.

    Args:
        interval (int | None): every how many iterations the per-unit γ statistics go to the visualizer
            (default: the LoggerHook's interval).
    """

    priority = 'LOW'  # after ParamSchedulerHook (LOW, registered first), before CheckpointHook (VERY_LOW)

    def __init__(self, interval: int | None = None, **unknown):
        reject_unknown_arguments(type(self), unknown, "custom_hooks[type='SSLPruningHook']")
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise ValueError(f'SSLPruningHook.interval must be a positive integer, got {interval!r}')
        self.interval = interval
        self._new_run = False  # load_from (not --resume) was a pruned SSL checkpoint
        self._scaled_start = None  # load_from (not --resume) was a sparsity-stage SSL checkpoint

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
        model = self._model(runner)
        if getattr(runner, 'distributed', False):
            find_unused = ddp_finds_unused_parameters(runner.cfg)
            if find_unused is not None:
                check_frozen_flow_under_ddp(model.fix_iter, True, find_unused, 'model.train_cfg.fix_iter',
                                            'model_wrapper_cfg=dict(find_unused_parameters=True)')
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) or 'ExponentialMovingAverage' in type(hook).__name__:
                raise NotImplementedError(f'SSLPruningHook changes the network mid-run; {type(hook).__name__} keeps '
                                          'a copy of the dense network that it cannot follow: remove it')

    def before_train(self, runner) -> None:
        model = self._model(runner)
        ctrl = model.ssl_controller
        if self._scaled_start is not None:
            raise ValueError(f'{self._scaled_start} is a sparsity-stage SSL checkpoint (with scaling factors); a new '
                             'SSL run starts from a dense or a pruned generator. Continue its run with --resume, '
                             'or evaluate it with tools/test.py')
        if ctrl is not None and self._new_run:  # load_from = a pruned checkpoint: this run finetunes it
            self._load_tf_teacher(runner, model, ctrl)
            model.step_counter.fill_(runner.iter)
            runner.logger.info(f'SSL: load_from is a pruned SSL checkpoint: this run finetunes it '
                               f'({"with" if ctrl.uses_tf else "without"} Temporal Finetuning)')
            self._new_run = False
        else:  # the stage lengths of the config only concern runs that have a sparsity stage
            self._check_schedule(runner, model, ctrl)
        if ctrl is None:
            # S is chosen on the loaded weights: every generator tensor must have loaded from the named file(s).
            check_generator_loaded(model, runner_dense_sources(runner, model))
            ctrl = model.attach(SSLController(model.ssl_cfg))
            self._load_tf_teacher(runner, model, ctrl)
            state = TrainStateRebuilder(runner)
            ctrl.start(model.generator, size=budget_size(getattr(runner, 'cfg', None), describe(model.generator)))
            # fix_iter counts from the start of the SSL run, not from a pretrained checkpoint's step counter.
            model.step_counter.fill_(runner.iter)
            state.rebuild(next_iter=runner.iter)
            runner.logger.info(f'SSL: started ({ctrl.cfg.method}, pruning_ratio {ctrl.ratio}, '
                               f'scope {ctrl.cfg.scope}); |S| = {self._num_pruned(ctrl)} units')
            self._report_selection(runner, ctrl)
            advice = ctrl.width_advice()
            if advice:
                runner.logger.warning(advice)
            if ctrl.stage == FINETUNE:
                self._log_pruned(runner, model, None)
        elif ctrl.prune_due:  # a checkpoint saved between the end of the sparsity stage and the prune
            self._prune(runner, model, ctrl, next_iter=runner.iter)
        if ctrl.stage == SPARSITY and ctrl.sir is not None:
            at = runner.iter + (ctrl.sir.total_iters() - ctrl.sir.iter) * self._accumulation(runner)
            runner.logger.info(f'SSL: sparsity stage prunes after iteration {at} (of {runner.max_iters})')

    @staticmethod
    def _report_selection(runner, ctrl: SSLController) -> None:
        """The per-layer selection report in the log and as ``<work_dir>/ssl_selection.json`` (main process)."""
        if getattr(runner, 'rank', 0) != 0:
            return
        for line in core_selection.format_report(ctrl.report):
            runner.logger.info(f'SSL: {line}')
        work_dir = getattr(runner, 'work_dir', None)
        if work_dir:
            path = os.path.join(work_dir, REPORT_FILE)
            atomic_write_text(path, core_selection.dumps(ctrl.report))
            runner.logger.info(f'SSL: selection report written to {path}')

    @staticmethod
    def _accumulation(runner) -> int:
        return int(getattr(runner.optim_wrapper, '_accumulative_counts', 1) or 1)

    def _check_schedule(self, runner, model: SSLBasicVSR, ctrl: SSLController | None) -> None:
        """Before S is chosen: the sparsity stage must leave finetuning iterations, and the config's stage values
        must agree with the stage its ``model.ssl.reg`` (or the resumed run's) defines."""
        acc = self._accumulation(runner)
        cfg = ctrl.cfg if ctrl is not None else model.ssl_cfg
        if ctrl is None:
            left = cfg.sparsity_iters
        elif ctrl.stage == SPARSITY and ctrl.sir is not None:
            left = ctrl.sir.total_iters() - ctrl.sir.iter
        else:
            left = None
        if left is not None:
            check_finetuning_left(runner.iter + left * acc, runner.max_iters, 'train_cfg.max_iters', 'model.ssl.reg')
        if getattr(runner, 'cfg', None) is not None:
            check_config_schedule(runner.cfg, cfg.sparsity_iters * acc, runner.max_iters, model.fix_iter)

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
        state.rebuild(next_iter=next_iter, cuts=ctrl.cuts, net=model.generator, prefix='generator.',
                      carry=ctrl.cfg.carries_optimizer)
        # Sparsity-stage scalars would otherwise be logged with their last value for the rest of the run.
        for key in SPARSITY_SCALARS:
            runner.message_hub.log_scalars.pop(key, None)
        self._log_pruned(runner, model, dense)

    def _log_pruned(self, runner, model, dense: int | None) -> None:
        pruned = count_params(model.generator)
        before = f'{dense} -> ' if dense is not None else ''
        tf = 'with' if model.ssl_controller.uses_tf else 'without'
        runner.logger.info(f'SSL: pruned at iteration {runner.iter}; generator parameters {before}{pruned}; '
                           f'finetuning {tf} Temporal Finetuning from here on')

    @staticmethod
    def _num_pruned(ctrl) -> int:
        return int(sum(v.numel() for v in (ctrl.pruned or {}).values()))

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        ctrl = self._model(runner).ssl_controller
        if ctrl is not None:
            checkpoint[CHECKPOINT_KEY] = ctrl.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Give the generator the structure the checkpoint was saved with, before mmengine loads its weights.

        ``--resume`` continues the saved run exactly (stage, S, α, teacher). ``load_from`` without ``--resume`` (and
        ``tools/test.py``) only takes the checkpoint's network: a pruned one starts a new run in the finetuning
        stage with its spec and this config's ``model.ssl`` (TF teacher from ``ssl.tf_teacher``); a sparsity-stage
        one can be evaluated but not start a new run."""
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:  # a dense checkpoint (e.g. the pretrained model to prune): nothing to restore
            return
        model = self._model(runner)
        saved = SSLController.from_state_dict(state)
        train_state = TrainStateRebuilder(runner)
        if model.ssl_controller is not None:  # the generator was already changed: start from a dense one
            model.generator = self._fresh_generator(model)
        resume = bool(getattr(runner, '_resume', False))
        if resume or saved.stage == SPARSITY:
            ctrl = saved
            self._scaled_start = None if resume else getattr(runner, '_load_from', 'load_from')
        else:
            ctrl = SSLController.from_pruned(model.ssl_cfg, saved.spec, model.generator)
            self._new_run = True
        ctrl.restore_structure(model.generator)
        model.attach(ctrl)
        train_state.rebuild()
        runner.logger.info(f'SSL: restored the {ctrl.stage}-stage structure from the checkpoint'
                           f'{"" if resume else " (a new run: its SSL state is not resumed)"}')

    # -- the TF teacher ------------------------------------------------------------------------------------------
    @staticmethod
    def _load_tf_teacher(runner, model: SSLBasicVSR, ctrl: SSLController) -> None:
        """``model.ssl.tf_teacher``: a dense mmagic checkpoint (``state_dict`` with ``generator.`` keys) as the TF
        teacher."""
        path = ctrl.cfg.tf_teacher
        if path is None or model.tf_loss is None:
            return
        where = f'model.ssl.tf_teacher ({path})'
        ckpt = _load_checkpoint(path, map_location='cpu')
        if CHECKPOINT_KEY in ckpt:
            raise ValueError(f'{where}: the teacher must be a dense network, this is an SSL checkpoint')
        state = ckpt.get('state_dict', ckpt)
        prefix = 'generator.'
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} \
            if any(k.startswith(prefix) for k in state) else dict(state)
        if core_ckpt.structure_of(state, None) != core_ckpt.DENSE:
            raise ValueError(f'{where}: the teacher must be a dense network, this holds scaling factors')
        ctrl.set_teacher_state(state, where=where)
        runner.logger.info(f'SSL: Temporal Finetuning teacher from {path}')
