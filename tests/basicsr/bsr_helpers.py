"""Helpers for the BasicSR integration tests: tiny synthetic REDS-layout data, tiny option files, and runs of
the real entry points in subprocesses (as a user would run them)."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / 'ssl_plugin' / 'train.py'
TEST = REPO / 'ssl_plugin' / 'test.py'
SCALE = 4
LR = 40            # SPyNet needs LR frames > 32 px on a side
GT_CROP = 144      # GT training crop: LR 36 px
TRAIN_CLIP, VAL_CLIP = '001', '000'   # REDSRecurrentDataset(val_partition=REDS4) holds '000' out
TRAIN_FRAMES = 100                     # REDSRecurrentDataset reads frames 0..99 of a training clip
VAL_FRAMES = 4


def _texture(rng, size):
    """Smooth random RGB texture (low-pass noise), so downscaling keeps structure a network can learn."""
    noise = rng.random((size // 8, size // 8, 3)).astype(np.float32)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)


def write_clip(root: Path, name: str, frames: int, seed: int) -> None:
    """GT frames of a texture panning one GT pixel per frame; LQ = area downscaling by SCALE."""
    rng = np.random.default_rng(seed)
    hr = LR * SCALE
    canvas = _texture(rng, hr + frames + 8)
    for sub in ('GT', 'LQ'):
        (root / sub / name).mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        gt = np.clip(canvas[i // 2:i // 2 + hr, i:i + hr] * 255, 0, 255).astype(np.uint8)
        lq = cv2.resize(gt, (LR, LR), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / 'GT' / name / f'{i:08d}.png'), gt)
        cv2.imwrite(str(root / 'LQ' / name / f'{i:08d}.png'), lq)


def make_tiny_data(root: Path) -> Path:
    """A REDS-like dataset: one 100-frame training clip and one short validation clip."""
    write_clip(root, TRAIN_CLIP, TRAIN_FRAMES, seed=1)
    write_clip(root, VAL_CLIP, VAL_FRAMES, seed=2)
    (root / 'meta_info.txt').write_text(f'{TRAIN_CLIP} {TRAIN_FRAMES} ({LR * SCALE},{LR * SCALE},3)\n')
    (root / 'val_meta.txt').write_text(f'{VAL_CLIP} {VAL_FRAMES} ({LR * SCALE},{LR * SCALE},3)\n')
    return root


def base_options(data: Path, name: str, arch: str = 'BasicVSR') -> dict:
    """A complete, tiny SSL option dict (seconds per run on 2 CPU cores)."""
    return {
        'name': name,
        'model_type': 'SSLVideoRecurrentModel',
        'scale': SCALE,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'REDS', 'type': 'REDSRecurrentDataset',
                'dataroot_gt': str(data / 'GT'), 'dataroot_lq': str(data / 'LQ'),
                'meta_info_file': str(data / 'meta_info.txt'), 'val_partition': 'REDS4', 'test_mode': False,
                'io_backend': {'type': 'disk'}, 'num_frame': 3, 'gt_size': GT_CROP, 'interval_list': [1],
                'random_reverse': False, 'use_hflip': True, 'use_rot': True,
                'num_worker_per_gpu': 0, 'batch_size_per_gpu': 1, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None,
            },
            'val': {
                'name': 'REDS4', 'type': 'VideoRecurrentTestDataset',
                'dataroot_gt': str(data / 'GT'), 'dataroot_lq': str(data / 'LQ'),
                'meta_info_file': str(data / 'val_meta.txt'),
                'cache_data': True, 'io_backend': {'type': 'disk'}, 'num_frame': -1,
            },
        },
        'network_g': {'type': arch, 'num_feat': 8, 'num_block': 1},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'ssl': {'method': 'ssl', 'pruning_ratio': 0.5,
                'reg': {'delta': 0.05, 'interval': 1, 'ceiling': 0.1, 'stabilize_iter': 2}},
        'train': {
            'ema_decay': 0.9,
            'optim_g': {'type': 'Adam', 'lr': 2e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [8], 'restart_weights': [1],
                          'eta_min': 1e-7},
            'total_iter': 8, 'warmup_iter': -1, 'fix_flow': 3, 'flow_lr_mul': 0.125,
            'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'reduction': 'mean'},
            'tf_opt': {'type': 'TFLoss', 'loss_weight': 1.0},
        },
        'val': {'val_freq': 4, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
        'dist_params': {'backend': 'gloo', 'port': 29500},
        'find_unused_parameters': True,
    }


def fast_options(data: Path, name: str) -> dict:
    """Tiny BasicVSRUni (narrow full-resolution path) trained on one whole 4-frame clip: no random crop, flip or frame
    choice, so a run is a deterministic function of its options (what the resume-equality tests need)."""
    opt = base_options(data, name, arch='BasicVSRUni')
    opt['network_g']['num_feat_hr'] = 8
    opt['datasets']['train'] = dict(opt['datasets']['val'], num_worker_per_gpu=0, batch_size_per_gpu=1,
                                    dataset_enlarge_ratio=1, prefetch_mode=None)
    return opt


def parsed(opt: dict, root: Path, is_train: bool = True) -> dict:
    """What BasicSR's parse_options makes of ``opt`` (single process, no CLI), for building a model in-process."""
    opt = copy.deepcopy(opt)
    opt.update(dist=False, rank=0, world_size=1, is_train=is_train, auto_resume=False, root_path=str(root))
    if opt.get('num_gpu') == 'auto':
        import torch
        opt['num_gpu'] = torch.cuda.device_count()
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        dataset['scale'] = opt['scale']
    exp = root / 'experiments' / opt['name']
    opt['path'].update(experiments_root=str(exp), models=str(exp / 'models'),
                       training_states=str(exp / 'training_states'), log=str(exp),
                       visualization=str(exp / 'visualization'))
    return opt


def merge(opt: dict, **changes) -> dict:
    """A copy of ``opt`` with ``changes`` ('a__b' means opt['a']['b']); a value of ... deletes the key."""
    opt = copy.deepcopy(opt)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split('__')
        node = opt
        for p in parents:
            node = node[p]
        if value is ...:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return opt


def write_options(folder: Path, opt: dict) -> Path:
    path = folder / f'{opt["name"]}.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def run_entry(script, yml: Path, cwd: Path, *args, nproc: int = 0, env=None, check=True, timeout=600):
    """Run an entry point (``ssl_plugin/train.py`` ...) like a user, in ``cwd``; return the CompletedProcess."""
    full_env = {**os.environ, 'OMP_NUM_THREADS': '1' if nproc else '2', 'PYTHONWARNINGS': 'ignore', **(env or {})}
    if nproc:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(nproc), '--master_port',
               str(_free_port()), str(script), '-opt', str(yml), '--launcher', 'pytorch', *args]
    else:
        cmd = [sys.executable, str(script), '-opt', str(yml), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n'
                             f'{proc.stderr[-6000:]}')
    return proc


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
