"""Helpers of the deployment tests: a tiny pruned BasicSR BasicVSR saved as BasicSR saves it (state dict + spec), and
its option file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

FEAT, BLOCKS, SCALE = 8, 1, 4
SIZE = (36, 40)  # LR frames: the smallest SPyNet takes is 33 px a side


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


def write_frames(folder: Path, n: int, size=SIZE, seed: int = 0) -> list[np.ndarray]:
    """Smooth random frames panning one pixel per frame (BGR on disk)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    canvas = cv2.resize(rng.random((size[0] // 4, (size[1] + n) // 4, 3)).astype(np.float32),
                        (size[1] + n, size[0]), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(n):
        rgb = np.clip(canvas[:, i:i + size[1]] * 255, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f'{i:08d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frames.append(rgb)
    return frames
