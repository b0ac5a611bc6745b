"""Let mmengine's ``--launcher pytorch`` start on machines without a GPU (DDP over gloo on CPU).

Why: mmengine 0.10.7 ``_init_dist_pytorch`` calls ``torch.cuda.set_device(LOCAL_RANK)`` unconditionally, which raises
"Found no NVIDIA driver" when CUDA is unavailable, so a CPU run with ``env_cfg.dist_cfg.backend='gloo'`` never starts.
On such a machine no CUDA device can be selected anyway, so selecting one becomes a no-op there; wherever CUDA is
available nothing changes. Also needed on CPU: ``model_wrapper_cfg=dict(type='MMDistributedDataParallel',
device_ids=None)``, because mmengine passes ``device_ids=[LOCAL_RANK]``, which torch's DDP refuses for CPU modules.
Drop when: mmengine skips ``set_device`` on CPU-only machines.
"""
from __future__ import annotations

import functools

import torch

_applied = False


def apply() -> bool:
    """Install the CPU-only ``torch.cuda.set_device`` guard; True when installed by this call."""
    global _applied
    if _applied or torch.cuda.is_available():
        return False
    original = torch.cuda.set_device

    @functools.wraps(original)
    def set_device(device):
        if not torch.cuda.is_available():
            return None
        return original(device)

    torch.cuda.set_device = set_device
    _applied = True
    return True
