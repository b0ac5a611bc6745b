"""Run BasicSR's own ``train_pipeline`` / ``test_pipeline`` on machines without CUDA too.

BasicSR 1.4.2 assumes CUDA in two places of its pipeline (its model-side assumptions are handled by
SSLVideoRecurrentModel): ``basicsr.train.load_resume_state`` maps the resumed state onto the current CUDA device, and
``basicsr.utils.dist_util.init_dist`` pins a CUDA device per rank (``rank % cuda_device_count``) and defaults to
NCCL. When CUDA is absent, :func:`use_cpu_friendly_launch` substitutes the two functions in BasicSR's modules for
this process only (no BasicSR file changes); with CUDA nothing is touched and BasicSR runs exactly as shipped.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from basicsr.utils import scandir
from basicsr.utils.misc import check_resume


def init_dist(launcher, backend='nccl', **kwargs):
    """BasicSR's ``init_dist`` for CPU hosts: ``--launcher pytorch`` (torchrun sets RANK etc.) with the gloo backend."""
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs CUDA; without CUDA only --launcher pytorch (gloo) works')
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    dist.init_process_group(backend='gloo', **kwargs)


def load_resume_state(opt):
    """BasicSR's ``load_resume_state`` with the state read onto the CPU, and the newest state looked up in the run's
    own ``training_states`` folder (BasicSR looks relative to the working directory)."""
    path = None
    if opt['auto_resume']:
        folder = opt['path']['training_states']
        if os.path.isdir(folder):
            iters = [int(v.split('.state')[0]) for v in scandir(folder, suffix='state', recursive=False,
                                                                  full_path=False)]
            if iters:
                path = os.path.join(folder, f'{max(iters)}.state')
                opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
    if path is None:
        return None
    state = torch.load(path, map_location='cpu', weights_only=True)
    check_resume(opt, state['iter'])
    return state


def use_cpu_friendly_launch() -> bool:
    """Substitute the two CUDA-only pipeline functions when CUDA is unavailable; returns whether it did."""
    if torch.cuda.is_available():
        return False
    import basicsr.train as host_train
    import basicsr.utils.options as host_options

    host_train.load_resume_state = load_resume_state
    host_options.init_dist = init_dist
    return True


def run_pipeline(kind: str, root_path=None) -> None:
    """BasicSR's ``train_pipeline`` or ``test_pipeline`` (``kind``) with the plugin registered and, without CUDA, the
    CPU-friendly resume / DDP launch; outputs go under ``root_path`` (default: the current directory)."""
    from . import register

    register()
    use_cpu_friendly_launch()
    if kind == 'train':
        from basicsr.train import train_pipeline as pipeline
    elif kind == 'test':
        from basicsr.test import test_pipeline as pipeline
    else:
        raise ValueError(f"kind must be 'train' or 'test', got {kind!r}")
    pipeline(os.path.abspath(root_path or os.getcwd()))
