"""Test-only entry point for the DDP test: ``ssl_plugin/train.py`` with ``model_type: RankProbeModel``, an
``SSLVideoRecurrentModel`` that also records, on every rank, its weights (net_g, EMA), optimizer and scheduler state
after every iteration (so after the re-wrap at pruning and at the end) and writes them to
``<experiments_root>/rank<r>.pt`` whenever BasicSR saves (at each checkpoint and at the end)."""
import copy
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from ssl_plugin.basicsr_plugin import register  # noqa: E402

register()

from basicsr.utils.registry import MODEL_REGISTRY  # noqa: E402

from ssl_plugin.basicsr_plugin.launch import run_pipeline  # noqa: E402
from ssl_plugin.basicsr_plugin.ssl_video_recurrent_model import SSLVideoRecurrentModel  # noqa: E402


def _cpu(state):
    return {k: v.detach().cpu().clone() for k, v in state.items()}


@MODEL_REGISTRY.register()
class RankProbeModel(SSLVideoRecurrentModel):

    def optimize_parameters(self, current_iter):
        super().optimize_parameters(current_iter)
        snaps = self.__dict__.setdefault('_rank_snapshots', [])
        ema = getattr(self, 'net_g_ema', None)
        snaps.append({
            'iter': current_iter, 'stage': self.controller.stage, 'wrapped': type(self.net_g).__name__,
            'net_g': _cpu(self.get_bare_model(self.net_g).state_dict()),
            'net_g_ema': _cpu(ema.state_dict()) if ema is not None else None,
            'optimizers': [copy.deepcopy(o.state_dict()) for o in self.optimizers],
            'schedulers': [copy.deepcopy(s.state_dict()) for s in self.schedulers],
            'lq_sum': float(self.lq.sum()),
        })

    def save(self, epoch, current_iter):
        super().save(epoch, current_iter)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        torch.save(self.__dict__.get('_rank_snapshots', []),
                   os.path.join(self.opt['path']['experiments_root'], f'rank{rank}.pt'))


if __name__ == '__main__':
    run_pipeline('train')
