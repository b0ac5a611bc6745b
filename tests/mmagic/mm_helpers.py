"""Helpers of the MMagic integration tests: a tiny dataset cut from a real clip, a tiny user config that inherits the
project's demo config, in-process mmengine runs and runs of mmagic's own tools/train.py / tools/test.py."""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from ssl_plugin.core.algorithm import SSLConfig

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEMO_CONFIG = REPO / 'options' / 'mmagic' / 'ssl_basicvsr_demo.py'
MM_TOOLS = Path(importlib.util.find_spec('mmagic').submodule_search_locations[0]) / '.mim' / 'tools'
TRAIN, TEST = MM_TOOLS / 'train.py', MM_TOOLS / 'test.py'

SCALE = 4
GT_SIZE = 64        # LR 16 px: mmagic's BasicVSRNet (SPyNet) runs at that size
FRAMES = 8          # per clip: clip 000 validates, clip 001 trains (REDS4 rule of make_dataset)
REG = dict(delta=0.05, interval=1, ceiling=0.1, stabilize_iter=2)
SPARSITY_ITERS = SSLConfig.from_dict(dict(reg=REG)).sparsity_iters  # 4: ceil(0.1 / 0.05) * 1 + 2
FINETUNE_ITERS = 4


def make_clip_data(root: Path) -> Path:
    """Two 8-frame clips of the real carphone sequence, GT 64 px, BI x4, in mmagic's BasicFramesDataset layout."""
    from ssl_plugin.tools.clips import clip_path
    from ssl_plugin.tools.make_dataset import build_dataset

    build_dataset(clip_path('carphone'), root, scale=SCALE, degradations=['BI'], crop=(24, 8, 128, 128),
                  resize=(GT_SIZE, GT_SIZE), end=2 * FRAMES, clip_len=FRAMES, names=['000', '001'])
    return root


USER_CONFIG = '''
_base_ = {base!r}
experiment_name = {name!r}
data_root = {data!r}
sparsity_iters = {sparsity}
finetune_iters = {finetune}
model = dict(
    generator=dict(mid_channels=8, num_blocks=1),
    ssl=dict(reg={reg!r}),
    train_cfg=dict(fix_iter={fix_iter}))
train_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root, num_input_frames=4))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = [dict(num_workers=0, batch_size=1, persistent_workers=False,
                        sampler=dict(type='DefaultSampler', shuffle=False),
                        dataset=dict(type='BasicFramesDataset',
                                     metainfo=dict(dataset_type='reds_reds4', task_name='vsr'), data_root=data_root,
                                     data_prefix=dict(img='BIx4', gt='GT'),
                                     ann_file='meta_info_reds4_val.txt', depth=1,
                                     pipeline={{{{_base_.val_pipeline}}}}))]
train_cfg = dict(max_iters=sparsity_iters + finetune_iters, val_interval=sparsity_iters + finetune_iters)
param_scheduler = dict(begin=sparsity_iters, periods=[finetune_iters])
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, save_best=None))
'''


def write_user_config(folder: Path, data: Path, name: str = 'user', fix_iter: int = SPARSITY_ITERS + 2,
                      extra: str = '') -> Path:
    """A user's config: inherits the project's demo config (which inherits mmagic's) and shrinks everything."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{name}.py'
    path.write_text(USER_CONFIG.format(base=str(DEMO_CONFIG), name=name, data=str(data), sparsity=SPARSITY_ITERS,
                                       finetune=FINETUNE_ITERS, fix_iter=fix_iter, reg=REG) + extra)
    return path


def run_in_process(config: Path, work_dir: Path, resume_from: Path | None = None, **overrides):
    """Train with mmengine's Runner in this process (as tools/train.py does, without its CLI); returns the runner."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'{config.stem}_{uuid.uuid4().hex[:8]}'  # mmengine's global instances are keyed by it
    for key, value in overrides.items():
        cfg[key] = value
    if resume_from is not None:
        cfg.resume, cfg.load_from = True, str(resume_from)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def tool_env() -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), str(HERE), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env.setdefault('OMP_NUM_THREADS', '1')
    env['PYTHONWARNINGS'] = 'ignore'
    return env


def run_tool(args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command as a user would; fail with its output tail when it fails."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=tool_env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, args))} failed ({proc.returncode}):\n'
                             f'{(proc.stdout + proc.stderr)[-6000:]}')
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


PYTHON = sys.executable
