"""Helpers of the deployment tests: a tiny pruned BasicSR BasicVSR saved as BasicSR saves it (state dict + spec), and
its option file."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

FEAT, BLOCKS, SCALE = 8, 1, 4


def options(path: Path, feat: int = FEAT, blocks: int = BLOCKS) -> Path:
    opt = {'name': 'tiny', 'model_type': 'SSLVideoRecurrentModel', 'scale': SCALE, 'num_gpu': 0,
           'network_g': {'type': 'BasicVSR', 'num_feat': feat, 'num_block': blocks,
                         'spynet_path': 'experiments/pretrained_models/not_there.pth'},
           'path': {'pretrain_network_g': None}}
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def pruned_checkpoint(path: Path, feat: int = FEAT, blocks: int = BLOCKS, seed: int = 0):
    """A BasicVSR pruned at ratio 0.5 by the engine, saved as ``{'params': state, 'ssl_spec': spec}``; returns the
    network too."""
    from basicsr.archs.basicvsr_arch import BasicVSR

    from ssl_plugin.basicsr_plugin import register
    from ssl_plugin.basicsr_plugin.checkpoint import SPEC_KEY
    from ssl_plugin.core import describe, l1_scores, prune, select_unimportant
    from ssl_plugin.core.checkpoint import network_state
    register()

    torch.manual_seed(seed)
    net = BasicVSR(num_feat=feat, num_block=blocks).eval()
    spec = prune(net, select_unimportant(l1_scores(net, describe(net)), ratio=0.5, scope='local', align=1))
    torch.save({'params': network_state(net), SPEC_KEY: spec}, path)
    return net
