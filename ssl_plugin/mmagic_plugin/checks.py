"""Checks of an mmengine config against the SSL run it describes; each error names the config key and its right value.

Why: mmagic's Python configs compute derived values (``param_scheduler.begin``, ``model.train_cfg.fix_iter``,
``train_cfg.max_iters``) from variables when the file is read. A config that inherits ours and changes
``model.ssl.reg`` inherits the values computed from the base's reg, and the run would silently shift its schedule.
"""
from __future__ import annotations

from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel


def _schedulers(cfg) -> list:
    sched = cfg.get('param_scheduler')
    if sched is None:
        return []
    return list(sched) if isinstance(sched, (list, tuple)) else [sched]


def check_config_schedule(cfg, sparsity_iters: int, max_iters: int, fix_iter: int = 0) -> None:
    """``sparsity_iters``: the true length of the sparsity stage in iterations (``SSLConfig.sparsity_iters`` times
    the gradient-accumulation count). Raise when the config's stage variables or the values derived from them
    disagree with it:

    * a top-level ``sparsity_iters`` (our configs' variable) must equal it;
    * with a top-level ``finetune_iters`` too, ``train_cfg.max_iters`` must be their sum;
    * the iteration-based schedulers must start at 0 (one schedule over the whole run) or at the first finetuning
      iteration (the earliest ``begin``; a later one, e.g. after a warm-up, is the user's choice);
    * ``model.train_cfg.fix_iter`` must be below ``train_cfg.max_iters``, or SPyNet is never trained. Its value
      relative to the stage is the user's choice (paper: ``sparsity_iters + 5000``; the demo: half the stage).
    """
    hint = ' (set from model.ssl.reg: ceil(ceiling / delta) * interval + stabilize_iter iterations)'
    declared = cfg.get('sparsity_iters')
    if declared is not None and declared != sparsity_iters:
        raise ValueError(f'sparsity_iters = {declared} in the config, but model.ssl.reg makes the sparsity stage '
                         f'{sparsity_iters} iterations long{hint}: set sparsity_iters = {sparsity_iters}, and again '
                         'every value derived from it (param_scheduler.begin, model.train_cfg.fix_iter, '
                         'train_cfg.max_iters): a derived config does not recompute its base\'s values')
    finetune = cfg.get('finetune_iters')
    if declared is not None and finetune is not None and max_iters != sparsity_iters + finetune:
        raise ValueError(f'train_cfg.max_iters = {max_iters}, but sparsity_iters + finetune_iters = '
                         f'{sparsity_iters} + {finetune}: set train_cfg.max_iters = {sparsity_iters + finetune}')
    begins = [int(s.get('begin', 0)) for s in _schedulers(cfg) if not s.get('by_epoch', True)]
    if begins and min(begins) not in (0, sparsity_iters):
        raise ValueError(f'param_scheduler.begin = {min(begins)}: the sparsity stage ends at iteration '
                         f'{sparsity_iters}{hint}, so the schedule would start neither at the run\'s start nor at '
                         f'finetuning: set param_scheduler.begin = {sparsity_iters} (a schedule over the finetuning '
                         'stage, with its end / periods set to match) or 0 (one schedule over the whole run)')
    if fix_iter and fix_iter >= max_iters:
        raise ValueError(f'model.train_cfg.fix_iter = {fix_iter} is not below train_cfg.max_iters = {max_iters}: '
                         'SPyNet would never be trained; set fix_iter below max_iters (the paper: '
                         f'sparsity_iters + 5000 = {sparsity_iters + 5000})')


def ddp_finds_unused_parameters(cfg) -> bool | None:
    """Whether the DDP wrapper that ``Runner.wrap_model`` builds from ``cfg`` looks for unused parameters (mmengine:
    ``model_wrapper_cfg.find_unused_parameters``, else a top-level ``find_unused_parameters``); None when the
    configured wrapper is not a DistributedDataParallel."""
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        return bool(cfg.get('find_unused_parameters', False))
    cls = MODEL_WRAPPERS.get(wrapper.get('type', 'MMDistributedDataParallel'))
    if not (isinstance(cls, type) and issubclass(cls, DistributedDataParallel)):
        return None
    return bool(wrapper.get('find_unused_parameters', False))
