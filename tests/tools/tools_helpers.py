"""Helpers of the plotting-tool tests: a tiny real SSL run (``ssl_plugin/train.py`` on a synthetic 6-frame clip),
BasicVSR with 3 residual blocks per branch (so there is a middle block), per-layer γ logged to the log file and
tensorboard, a checkpoint and training state every iteration."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / 'ssl_plugin' / 'train.py'
SCALE, LR_SIZE, FRAMES = 4, 40, 6        # LR frames > 32 px for SPyNet
SPARSITY, FINETUNE = 5, 1                # reg below: 1 growth iteration (α 0 -> 0.1) + 4 held
NAME, CLIP = 'tiny_ssl', '000'


def write_clip(root: Path) -> Path:
    """GT frames of a smooth random texture panning one GT pixel per frame; LQ = area downscaling."""
    rng = np.random.default_rng(3)
    hr = LR_SIZE * SCALE
    canvas = cv2.resize(rng.random((hr // 8, hr // 8, 3)).astype(np.float32), (hr + FRAMES, hr),
                        interpolation=cv2.INTER_CUBIC)
    for sub in ('GT', 'LQ'):
        (root / sub / CLIP).mkdir(parents=True, exist_ok=True)
    for i in range(FRAMES):
        gt = np.clip(canvas[:, i:i + hr] * 255, 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / 'GT' / CLIP / f'{i:08d}.png'), gt)
        cv2.imwrite(str(root / 'LQ' / CLIP / f'{i:08d}.png'),
                    cv2.resize(gt, (LR_SIZE, LR_SIZE), interpolation=cv2.INTER_AREA))
    (root / 'meta.txt').write_text(f'{CLIP} {FRAMES} ({hr},{hr},3)\n')
    return root


def options(data: Path) -> dict:
    clip = {'name': 'REDS4', 'type': 'VideoRecurrentTestDataset', 'dataroot_gt': str(data / 'GT'),
            'dataroot_lq': str(data / 'LQ'), 'meta_info_file': str(data / 'meta.txt'), 'cache_data': True,
            'io_backend': {'type': 'disk'}, 'num_frame': -1}
    total = SPARSITY + FINETUNE
    return {
        'name': NAME, 'model_type': 'SSLVideoRecurrentModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': dict(clip, num_worker_per_gpu=0, batch_size_per_gpu=1, dataset_enlarge_ratio=1,
                                   prefetch_mode=None),
                     'val': clip},
        'network_g': {'type': 'BasicVSR', 'num_feat': 8, 'num_block': 3},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'ssl': {'method': 'ssl', 'pruning_ratio': 0.5, 'scope': 'local',
                'reg': {'delta': 0.1, 'interval': 1, 'ceiling': 0.1, 'stabilize_iter': SPARSITY - 1}},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-2, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total], 'restart_weights': [1],
                                'eta_min': 1e-7},
                  'scheduler_starts_at_finetune': True,  # constant lr while sparsifying: γ fall steadily
                  'total_iter': total, 'warmup_iter': -1, 'fix_flow': total + 1, 'flow_lr_mul': 0.125,
                  'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'reduction': 'mean'},
                  'tf_opt': {'type': 'TFLoss', 'loss_weight': 1.0}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 1, 'use_tb_logger': True, 'ssl_per_layer': True},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }


def train_tiny_run(cwd: Path) -> SimpleNamespace:
    """Run ``ssl_plugin/train.py`` like a user, in ``cwd``; return where everything went."""
    data = write_clip(cwd / 'data')
    opt = options(data)
    yml = cwd / f'{NAME}.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, str(TRAIN), '-opt', str(yml)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f'tiny SSL run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    exp = cwd / 'experiments' / NAME
    return SimpleNamespace(cwd=cwd, data=data, opt=opt, yml=yml, exp=exp, tb=cwd / 'tb_logger' / NAME,
                           lq=data / 'LQ' / CLIP)
