"""SSLVideoRecurrentModel: BasicSR's VideoRecurrentModel driving the SSL engine (Algorithm 1) from BasicSR's iteration
counter.

The model only translates: the engine's ``SSLController`` decides what to prune and when; this class feeds it BasicSR's
iterations, adds L_SIR / L_TF to BasicSR's loss, rebuilds BasicSR's optimizer, scheduler, EMA and DDP wrapper after
pruning, and stores the controller in BasicSR's checkpoints. Everything else (data, loop, validation, flags) is
BasicSR's own.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter, OrderedDict
from copy import deepcopy

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.video_recurrent_model import VideoRecurrentModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import distributed as dist
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..core import checkpoint as core_ckpt
from ..core import cost_summary, describe, optim_state, scaling_factors
from ..core import selection as core_selection
from ..core.algorithm import FINETUNE, SPARSITY, SSLConfig, SSLController
from ..core.io import atomic_write_text
from ..core.options import check_finetuning_left, check_frozen_flow_under_ddp, check_near_misses
from ..core.spec import dumps as spec_dumps
from . import checkpoint as ckpt_io

#: Name fragments BasicSR's ``fix_flow`` freezes (VideoRecurrentModel: the flow network and IconVSR's EDVR).
FLOW_MODULES = ('spynet', 'edvr')
PRETRAIN_KEY = 'path.pretrain_network_g'
#: Our keys in BasicSR's own sections (a near miss of one is an error; every other key is BasicSR's).
TRAIN_KEYS = ('sir_opt', 'tf_opt', 'scheduler_starts_at_finetune', 'ssl_gamma_lr_mul')
LOGGER_KEYS = ('ssl_per_layer',)
STATE_KEY = 'ssl'
#: The per-layer selection report, written beside the checkpoints (``path.models``) when S is chosen.
REPORT_FILE = 'ssl_selection.json'


def budget_size(opt, topology) -> list[int] | None:
    """(frames, H, W) of the LR training clip: ``datasets.train`` ``num_frame`` and ``gt_size`` / the network's
    scale; None when the options do not say (then ``ssl.budget_size`` must, for a MAC target)."""
    train = (opt.get('datasets') or {}).get('train') or {}
    frames, gt = train.get('num_frame'), train.get('gt_size')
    if not isinstance(frames, int) or frames < 2 or not gt:
        return None
    return core_selection.lr_size(frames, gt, topology)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def _sync_from_rank0(net) -> None:
    """Every rank gets rank 0's weights (ranks seed differently, so networks trained from scratch differ)."""
    if _distributed():
        for t in net.state_dict().values():
            dist.broadcast(t, 0)


def _check_ranks_agree(spec) -> None:
    """Under DDP every rank must have cut the same units; compare the spec's digest across ranks."""
    if not _distributed():
        return
    digest = hashlib.sha256(spec_dumps(spec).encode()).hexdigest()
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f'ranks pruned differently (pruning spec digests {digests})')
    get_root_logger().info(f'SSL: pruning spec identical on all {len(digests)} ranks (sha256 {digest[:12]})')


def _resume_ssl_state(opt) -> dict | None:
    """The controller state in the training state BasicSR resumes from (``path.resume_state``), read on CPU."""
    path = opt['path'].get('resume_state')
    if not opt.get('is_train') or not path:
        return None
    state = torch.load(path, map_location='cpu', weights_only=True)
    if STATE_KEY not in state:
        raise ValueError(f'path.resume_state: {path} holds no SSL state (saved by another model_type?); '
                         'SSLVideoRecurrentModel resumes only its own runs')
    return state[STATE_KEY]


@MODEL_REGISTRY.register()
class SSLVideoRecurrentModel(VideoRecurrentModel):
    """VideoRecurrentModel + Structured Sparsity Learning. Options: the ``ssl:`` section (see README); in ``train:``
    the optional ``sir_opt`` (default ``{type: SIRLoss, loss_weight: 1}``), ``tf_opt`` (default
    ``{type: TFLoss, loss_weight: 1}``; ``tf_opt: ~`` finetunes without TF), ``scheduler_starts_at_finetune``
    (true: constant learning rate during the sparsity stage and the scheduler's first step at the first finetuning
    iteration, as in the paper; default false: one schedule over the whole run) and ``ssl_gamma_lr_mul`` (the γ's
    learning rate as a multiple of ``optim_g.lr``, in a parameter group of their own; default 1: γ are optimized
    like every other weight). ``logger.ssl_per_layer: true`` adds |γ| of pruned / kept units per layer to the logged
    values."""

    def __init__(self, opt):
        # Validate before anything is built, so a bad option stops the run at once with the key's name.
        for section, ours, where in ((opt, ('ssl',), ''), (opt.get('train'), TRAIN_KEYS, 'train'),
                                     (opt.get('logger'), LOGGER_KEYS, 'logger')):
            check_near_misses(section, ours, where)
        if opt.get('is_train') and opt.get('train') is not None:
            check_frozen_flow_under_ddp(opt['train'].get('fix_flow'), bool(opt.get('dist')),
                                        bool(opt.get('find_unused_parameters')), 'train.fix_flow',
                                        'find_unused_parameters: true (top level of the option file)')
        self.ssl_cfg = SSLConfig.from_dict(opt.get('ssl'), where='ssl')
        # BasicSR's setup_optimizers / setup_schedulers pop 'type' from opt['train']: keep a copy to rebuild them.
        self._train_opt = deepcopy(opt['train']) if opt.get('train') is not None else None
        if self._train_opt is not None:
            self._gamma_lr_mul()  # a bad value stops the run before anything is built
        self._defer_wrap = True  # no DDP wrapper until the structure (γ / pruned skeleton) is final
        self._flow_frozen = None
        self.controller = None
        self._start_spec = None  # set by load_network when a new run starts from a pruned checkpoint
        resume = _resume_ssl_state(opt)
        if resume is not None:
            self.controller = SSLController.from_state_dict(resume)
        if opt.get('is_train') and self._train_opt is not None:
            self._check_schedule()
        # Checkpoints may carry SSL structure when resuming or evaluating; a fresh SSL run starts from a dense one.
        self._structure_from_checkpoint = resume is not None or not opt['is_train']
        super().__init__(opt)
        if not self.is_train:
            self._defer_wrap = False
            self.net_g = self.model_to_device(self.get_bare_model(self.net_g))

    # ------------------------------------------------------------------------------------------------ set-up
    def init_training_settings(self):
        logger = get_root_logger()
        bare = self.get_bare_model(self.net_g)
        topology = describe(bare, aligned=self.ssl_cfg.aligned)  # a clear TypeError now if it is not supported
        try:
            topology.skipped_keys(self.ssl_cfg.skip)
        except ValueError as e:
            raise ValueError(f'ssl.skip: {e}') from e
        super().init_training_settings()  # BasicSR: EMA, pixel / perceptual losses, optimizer, scheduler
        self.cri_sir = build_loss(self.opt['train'].get('sir_opt') or {'type': 'SIRLoss'}).to(self.device)
        # Temporal Finetuning is part of Algorithm 1: on unless the option file says `tf_opt: ~`.
        tf_opt = self.opt['train'].get('tf_opt', {'type': 'TFLoss'})
        self.cri_tf = build_loss(tf_opt).to(self.device) if tf_opt else None
        ema = [self.net_g_ema] if getattr(self, 'ema_decay', 0) > 0 else []

        if self.controller is None and self._start_spec is not None:  # new run from a pruned checkpoint
            self.controller = SSLController.from_pruned(self.ssl_cfg, self._start_spec,
                                                        build_network(self.opt['network_g']))
            self._configure_controller()
            self._load_tf_teacher(logger)
            logger.info(f'SSL: {PRETRAIN_KEY} is a pruned SSL checkpoint: this run finetunes it '
                        f'({"with" if self.controller.uses_tf else "without"} Temporal Finetuning)')
        elif self.controller is None:  # fresh run: choose S on the (pretrained) dense network
            _sync_from_rank0(bare)
            self.controller = SSLController(self.ssl_cfg)
            self._configure_controller()
            self._load_tf_teacher(logger)
            dense = deepcopy(bare) if self.ssl_cfg.method == 'l1' else None
            if self.opt['path'].get('pretrain_network_g') is None:
                for e in ema:  # BasicSR copied each rank's own initialisation: copy the synchronised one
                    self._copy_weights(bare, e)
            self.controller.start(bare, others=ema, size=budget_size(self.opt, describe(bare)))
            if self.controller.stage == FINETUNE:
                _check_ranks_agree(self.controller.spec)
            self._log_selection(logger, bare, dense)
            self._rebuild_optimization(keep_lr=False)
        else:
            if self.controller.cfg != self.ssl_cfg:
                logger.warning('ssl: options differ from the resumed run; continuing with the resumed run\'s '
                               f'{self.controller.cfg}')
            self._configure_controller()
            logger.info(f'SSL: resumed in the {self.controller.stage} stage')
        if self.controller.stage == FINETUNE and self.cri_tf is not None and not self.controller.uses_tf:
            logger.warning('SSL: finetuning without Temporal Finetuning: no teacher weights (name a dense checkpoint '
                           'as ssl.tf_teacher)')
        self._defer_wrap = False
        self.net_g = self.model_to_device(bare)

    @staticmethod
    @torch.no_grad()
    def _copy_weights(src, dst) -> None:
        dst.load_state_dict(src.state_dict())

    def model_to_device(self, net):
        """BasicSR's, but (a) it waits until the structure is final, (b) DDP also works on CPU (gloo), and (c) every
        parameter is registered with DDP even while ``fix_flow`` has frozen the flow network."""
        net = net.to(self.device)
        if self._defer_wrap:
            return net
        if self.opt['dist']:
            flags = [(p, p.requires_grad) for p in net.parameters()]
            net.requires_grad_(True)
            kwargs = {'find_unused_parameters': self.opt.get('find_unused_parameters', False)}
            if self.device.type == 'cuda':
                kwargs['device_ids'] = [torch.cuda.current_device()]
            net = DistributedDataParallel(net, **kwargs)
            for p, flag in flags:
                p.requires_grad_(flag)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def setup_optimizers(self):
        """BasicSR's, then (with ``train.ssl_gamma_lr_mul`` != 1) the γ move to a last group of their own with
        ``optim_g.lr * ssl_gamma_lr_mul``: SIR drives them towards 0 at about lr per Adam step, so a short sparsity
        stage can give them a larger step without touching the weights' schedule."""
        super().setup_optimizers()
        mul = self._gamma_lr_mul()
        bare = self.get_bare_model(self.net_g)
        gammas = list(scaling_factors(bare, describe(bare)).values())
        self._gamma_group = mul != 1 and bool(gammas)
        if not self._gamma_group:
            return
        ids = {id(p) for p in gammas}
        for group in self.optimizer_g.param_groups:
            group['params'] = [p for p in group['params'] if id(p) not in ids]
        self.optimizer_g.add_param_group({'params': gammas, 'lr': self.optimizer_g.param_groups[0]['lr'] * mul})

    def _check_schedule(self) -> None:
        """The sparsity stage (the resumed run's, or this one's) must leave finetuning iterations before total_iter:
        it prunes at iteration ``sparsity_iters`` of the run (BasicSR numbers iterations from the run's start)."""
        ctrl = self.controller
        if ctrl is None or ctrl.stage == SPARSITY:
            cfg = ctrl.cfg if ctrl is not None else self.ssl_cfg
            check_finetuning_left(cfg.sparsity_iters, int(self._train_opt['total_iter']), 'train.total_iter',
                                  'ssl.reg')

    def _gamma_lr_mul(self) -> float:
        mul = (self._train_opt or {}).get('ssl_gamma_lr_mul', 1)
        if isinstance(mul, bool) or not isinstance(mul, (int, float)) or not mul > 0:
            raise ValueError(f'train.ssl_gamma_lr_mul must be a positive number, got {mul!r}')
        return float(mul)

    def _rebuild_optimization(self, keep_lr: bool = True) -> None:
        """New optimizer and scheduler over the current parameters. With ``keep_lr`` the schedule continues where it
        was (scheduler state and every group's lr / initial_lr carried over): no learning-rate jump at pruning. The γ
        group (``ssl_gamma_lr_mul``, always the last group) disappears with the γ at pruning."""
        old_sched = [s.state_dict() for s in self.schedulers]
        old_lrs = [[(g['lr'], g.get('initial_lr')) for g in o.param_groups] for o in self.optimizers]
        had_gamma_group = getattr(self, '_gamma_group', False)
        self.opt['train'] = deepcopy(self._train_opt)
        self.optimizers, self.schedulers = [], []
        self.setup_optimizers()
        self.setup_schedulers()
        if not keep_lr:
            return
        if had_gamma_group and not self._gamma_group:
            old_lrs = [groups[:-1] for groups in old_lrs]
            for state in old_sched:
                for key in ('base_lrs', '_last_lr'):
                    if isinstance(state.get(key), list):
                        state[key] = state[key][:-1]
        for sched, state in zip(self.schedulers, old_sched):
            sched.load_state_dict(state)
        for optim, groups in zip(self.optimizers, old_lrs):
            if len(optim.param_groups) != len(groups):
                raise RuntimeError('the rebuilt optimizer has a different number of parameter groups')
            for group, (lr, initial) in zip(optim.param_groups, groups):
                group['lr'] = lr
                if initial is not None:
                    group['initial_lr'] = initial

    def _configure_controller(self) -> None:
        """Hand the controller BasicSR's loss modules and a builder of fresh dense networks (the TF teacher's)."""
        self.controller.configure(sir_loss=self.cri_sir, tf_loss=self.cri_tf,
                                  teacher_factory=lambda: build_network(self.opt['network_g']),
                                  tf=self.cri_tf is not None)

    def _load_tf_teacher(self, logger) -> None:
        """``ssl.tf_teacher``: a dense BasicSR checkpoint (``params``) as the Temporal Finetuning teacher."""
        path = self.ssl_cfg.tf_teacher
        if path is None or self.cri_tf is None:
            return
        where = f'ssl.tf_teacher ({path})'
        ckpt = ckpt_io.read_checkpoint(path)
        state, _ = ckpt_io.select_state(ckpt, 'params', path)
        if ckpt_io.structure_of(ckpt, state) != core_ckpt.DENSE:
            raise ValueError(f'{where}: the teacher must be a dense network, this is an SSL checkpoint')
        self.controller.set_teacher_state(state, where=where)
        logger.info(f'SSL: Temporal Finetuning teacher from {path}')

    # ------------------------------------------------------------------------------------------------ training
    def update_learning_rate(self, current_iter, warmup_iter=-1):
        """BasicSR's, except that with ``train.scheduler_starts_at_finetune`` the sparsity stage keeps the initial
        learning rate and the schedule (warm-up included) counts finetuning iterations only."""
        if self._train_opt.get('scheduler_starts_at_finetune'):
            if self.controller.stage == SPARSITY:
                return
            # The run starts at iteration 0 and the SIR state counts the sparsity iterations (none for method l1).
            current_iter -= self.controller.sir.iter if self.controller.sir is not None else 0
        super().update_learning_rate(current_iter, warmup_iter)

    def feed_data(self, data):
        """BasicSR's, but never aliasing the batch: on CPU ``.to(device)`` returns the very tensor, and BasicSR's
        validation squeezes that tensor in place right after feeding it."""
        super().feed_data(data)
        if self.lq is data['lq']:
            self.lq = self.lq.clone()
        if 'gt' in data and self.gt is data['gt']:
            self.gt = self.gt.clone()

    def _update_flow_freeze(self, current_iter) -> None:
        """BasicSR's ``fix_flow`` as a function of the iteration (frozen while ``current_iter < fix_flow``), so that a
        resumed run freezes exactly like an uninterrupted one (BasicSR only freezes at iteration 1)."""
        if not self.fix_flow_iter:
            return
        frozen = current_iter < self.fix_flow_iter
        if frozen == self._flow_frozen:
            return
        logger = get_root_logger()
        if frozen:
            logger.info(f'Fix flow network and feature extractor for {self.fix_flow_iter} iters.')
        elif self._flow_frozen is not None:
            logger.warning('Train all the parameters.')
        for name, param in self.get_bare_model(self.net_g).named_parameters():
            if any(m in name for m in FLOW_MODULES):
                param.requires_grad_(not frozen)
        self._flow_frozen = frozen

    def optimize_parameters(self, current_iter):
        self._update_flow_freeze(current_iter)
        controller = self.controller
        self.optimizer_g.zero_grad()
        with controller.clip_losses(self.net_g, self.lq) as ssl_terms:
            self.output = self.net_g(self.lq)

        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            l_pix = self.cri_pix(self.output, self.gt)
            l_total += l_pix
            loss_dict['l_pix'] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            if l_percep is not None:
                l_total += l_percep
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                l_total += l_style
                loss_dict['l_style'] = l_style
        for name, term in ssl_terms.items():  # 'sir' in the sparsity stage, 'tf' while finetuning with TF
            l_total += term
            loss_dict[f'l_{name}'] = term

        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        if controller.step():
            self._prune(current_iter)

    def _prune(self, current_iter) -> None:
        """End of the sparsity stage: cut S from net_g and the EMA, then rebuild teacher, optimizer, scheduler, DDP."""
        logger = get_root_logger()
        bare = self.get_bare_model(self.net_g)
        dense = deepcopy(bare)
        carry = self.controller.cfg.carries_optimizer
        snapshot = optim_state.snapshot(self.optimizer_g, bare) if carry else None  # clones: only when used
        self.controller.prune(bare, others=[self.net_g_ema] if self.ema_decay > 0 else [])
        _check_ranks_agree(self.controller.spec)
        self._rebuild_optimization(keep_lr=True)
        if carry:
            self._carry_optimizer_state(logger, snapshot, bare)
        else:
            logger.info('SSL: a fresh Adam for the finetuning stage (ssl.optimizer_at_prune: fresh)')
        self.net_g = self.model_to_device(bare)
        self._flow_frozen = None  # re-apply fix_flow to the rebuilt modules at the next iteration
        logger.info(f'SSL: sparsity stage finished at iter {current_iter}: pruned, now finetuning'
                    f'{" with Temporal Finetuning" if self.controller.uses_tf else " without Temporal Finetuning"}')
        self._log_cost(logger, dense, bare)

    def _carry_optimizer_state(self, logger, snapshot, bare) -> None:
        """Adam moments and step counts of every surviving parameter, sliced for cut tensors (core's rule)."""
        carried, dropped = optim_state.carried_state(snapshot, bare, self.controller.cuts)
        n = optim_state.load_carried(self.optimizer_g, bare, carried)
        logger.info(f'SSL: optimizer state carried over for {n} of {sum(1 for _ in bare.parameters())} parameters')
        if dropped:
            logger.warning(f'SSL: optimizer state entries not carried (unknown kind, restarted): {dropped[:4]}')

    # ------------------------------------------------------------------------------------------------ logging
    def get_current_log(self):
        log = OrderedDict(self.log_dict)
        log.update(self.ssl_log_values())
        return log

    def ssl_log_values(self) -> dict:
        """The controller's values with BasicSR-style names (``ssl_alpha``, ``ssl_gamma_pruned``, ...); per layer
        (``ssl_gamma_pruned/<key>``) with ``logger.ssl_per_layer``."""
        per_layer = bool(self.opt.get('logger', {}).get('ssl_per_layer'))
        values = self.controller.log_values(self.get_bare_model(self.net_g), per_layer=per_layer)
        return OrderedDict((f'ssl_{k}', v) for k, v in values.items())

    @master_only
    def _log_selection(self, logger, net, dense=None) -> None:
        """The per-layer selection report in the log and as ``path.models/ssl_selection.json``."""
        c = self.controller
        for line in core_selection.format_report(c.report):
            logger.info(f'SSL: {line}')
        models = self.opt['path'].get('models')
        if models and os.path.isdir(models):  # BasicSR's make_exp_dirs creates it before the model is built
            path = os.path.join(models, REPORT_FILE)
            atomic_write_text(path, core_selection.dumps(c.report))
            logger.info(f'SSL: selection report written to {path}')
        advice = c.width_advice()
        if advice:
            logger.warning(advice)
        if dense is not None:  # l1: already pruned
            self._log_cost(logger, dense, net)

    @master_only
    def _log_cost(self, logger, dense, pruned) -> None:
        lq = getattr(self, 'lq', None)
        if lq is None:
            logger.info(f'SSL: params {sum(p.numel() for p in dense.parameters()):,d} -> '
                        f'{sum(p.numel() for p in pruned.parameters()):,d}')
            return
        s = cost_summary(dense, pruned, lq[:1])
        logger.info(f'SSL: params {s["params_dense"]:,d} -> {s["params_pruned"]:,d} (x{s["param_ratio"]:.2f}), '
                    f'MACs per clip of {tuple(lq.shape[1:])} {s["macs_dense"]:,d} -> {s["macs_pruned"]:,d} '
                    f'(x{s["mac_ratio"]:.2f})')

    # ------------------------------------------------------------------------------------------------ EMA
    def model_ema(self, decay=0.999):
        """BasicSR's EMA update; the EMA network always has net_g's structure (γ inserted / pruned identically)."""
        net_g = self.get_bare_model(self.net_g)
        if self.controller is not None and set(dict(net_g.named_parameters())) != \
                set(dict(self.net_g_ema.named_parameters())):
            raise RuntimeError('net_g_ema does not have net_g\'s structure (it must be pruned identically)')
        super().model_ema(decay)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def load_network(self, net, load_path, strict=True, param_key='params'):
        """BasicSR's load_network, but the network is first given the checkpoint's SSL structure (when resuming or
        testing) and a tensor that does not fit is always an error (never renamed to ``.ignore`` and skipped)."""
        logger = get_root_logger()
        ckpt = ckpt_io.read_checkpoint(load_path)
        state, used_key = ckpt_io.select_state(ckpt, param_key, load_path)
        where = f'{PRETRAIN_KEY} ({load_path}, [{used_key}])'
        spec = ckpt.get(ckpt_io.SPEC_KEY)
        kind = core_ckpt.structure_of(state, spec)
        if kind == core_ckpt.SCALED and not self._structure_from_checkpoint:
            raise ValueError(
                f'{where} is a sparsity-stage SSL checkpoint (with scaling factors); a new SSL run starts from a dense '
                'or a pruned network. Continue its run with --auto_resume / path.resume_state, or evaluate it with '
                'test.py and model_type SSLVideoRecurrentModel.')
        if kind == core_ckpt.PRUNED and not self._structure_from_checkpoint:
            self._start_spec = spec  # a new run that finetunes an already pruned network
        bare = self.get_bare_model(net)
        core_ckpt.conform(bare, state, spec, where=where)
        # A fresh SSL run chooses S on these weights: every tensor must load, whatever strict_load_g says.
        choose_s = not self._structure_from_checkpoint
        core_ckpt.check_shapes(bare, state, where=where, strict=strict or choose_s,
                               note='S is chosen on these weights, so every tensor must load (also with '
                               'path.strict_load_g: false)' if choose_s and not strict else '')
        logger.info(f'Loading {bare.__class__.__name__} model from {load_path}, with param key: [{used_key}] '
                    f'({kind}).')
        self._print_different_keys_loading(bare, state, strict)
        bare.load_state_dict(state, strict=strict)

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's layout plus ``ssl_spec`` once pruned; written atomically."""
        if current_iter == -1:
            current_iter = 'latest'
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network: as many param keys as networks are needed')
        save_dict = {}
        for net_, key in zip(nets, keys):
            save_dict[key] = core_ckpt.network_state(net_)
        if self.controller is not None and self.controller.spec is not None:
            save_dict[ckpt_io.SPEC_KEY] = self.controller.spec
        ckpt_io.atomic_torch_save(save_dict, f'{self.opt["path"]["models"]}/{net_label}_{current_iter}.pth')

    @master_only
    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state plus the controller (stage, S, SIR state, spec, teacher); written atomically."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], STATE_KEY: self.controller.state_dict()}
        ckpt_io.atomic_torch_save(state, f'{self.opt["path"]["training_states"]}/{current_iter}.state')

    # ------------------------------------------------------------------------------------------------ validation
    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """BasicSR's, with the metric buffers on the model's device (BasicSR allocates them on CUDA)."""
        metrics = self.opt['val'].get('metrics')
        if metrics is not None and not hasattr(self, 'metric_results'):
            counts = Counter(dataloader.dataset.data_info['folder'])
            self.metric_results = {folder: torch.zeros(n, len(metrics), dtype=torch.float32, device=self.device)
                                   for folder, n in counts.items()}
        super().dist_validation(dataloader, current_iter, tb_logger, save_img)

