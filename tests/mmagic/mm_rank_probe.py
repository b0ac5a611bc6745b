"""A test-only hook (imported through custom_imports in the DDP test): after every iteration, once SSLPruningHook has
pruned and rebuilt, each rank records its generator weights and its optimizer and scheduler state, and saves them
at the end of the run."""
import copy
import os

import torch
from mmagic.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class RankProbeHook(Hook):

    priority = 'LOWEST'  # after SSLPruningHook (LOW): the state of the iteration, pruning and re-wrap included

    def __init__(self):
        self.seen_batches = []
        self.snapshots = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen_batches.append(data_batch['inputs'][0].float().sum().item())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.snapshots.append({
            'iter': runner.iter + 1, 'stage': model.ssl_controller.stage, 'wrapped': type(runner.model).__name__,
            'generator': {k: v.detach().cpu().clone() for k, v in model.generator.state_dict().items()},
            'optimizer': copy.deepcopy(runner.optim_wrapper.state_dict()),
            'schedulers': [copy.deepcopy(s.state_dict()) for s in runner.param_schedulers or []]})

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        ctrl = model.ssl_controller
        torch.save({'pruned': ctrl.pruned, 'spec': ctrl.spec, 'batches': self.seen_batches,
                    'snapshots': self.snapshots}, os.path.join(runner.work_dir, f'rank{get_rank()}.pt'))
