"""A test-only hook (imported through custom_imports in the DDP test): each rank saves what it ended up with."""
import os

import torch
from mmagic.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class RankProbeHook(Hook):

    def __init__(self):
        self.seen_batches = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen_batches.append(data_batch['inputs'][0].float().sum().item())

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        ctrl = model.ssl_controller
        torch.save({'wrapped': type(runner.model).__name__, 'pruned': ctrl.pruned, 'spec': ctrl.spec,
                    'stage': ctrl.stage, 'batches': self.seen_batches,
                    'generator': {k: v.detach().cpu() for k, v in model.generator.state_dict().items()}},
                   os.path.join(runner.work_dir, f'rank{get_rank()}.pt'))
