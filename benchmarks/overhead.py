"""Training overhead of SSL: iteration time of the sparsity stage and of Temporal Finetuning against BasicSR's plain
``VideoRecurrentModel`` training, on the same network, options and batch.

Four BasicSR models are built in this process from one option dict and one dense initial checkpoint, and each runs
BasicSR's own ``feed_data`` + ``optimize_parameters`` (forward, losses, backward, optimizer step):

* ``plain``        ``VideoRecurrentModel`` on the dense network (the baseline);
* ``sparsity``     ``SSLVideoRecurrentModel`` in the sparsity stage (γ hooks on every prunable conv, L_SIR);
* ``finetune_tf``  ``SSLVideoRecurrentModel`` finetuning the pruned network with TF (a frozen teacher forward and the
  hidden-state loss on top);
* ``finetune``     the same pruned network finetuned without TF.

The pruned networks come from ``method: l1`` (pruned at once; the finetuning stage is the same code as after SSL's
sparsity stage, and with ``scope: local`` the same structure). The models take turns iteration by iteration, so a
change in machine load hits all of them alike. Reported per model: the fastest and the median iteration; the ratios
use the fastest (on a shared machine the others are slowed by whatever else runs), the median ratios are in the
JSON too.

    python benchmarks/overhead.py                                  # the paper's network, small clips (CPU)
    python benchmarks/overhead.py --batch 8 --frames 15 --size 64 64   # the paper's training batch (GPU)
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark_env import code_version, write_atomic  # noqa: E402  (benchmarks/ is the script directory)

import ssl_plugin  # noqa: E402,F401  (host compatibility shims before basicsr)

MODELS = ('plain', 'sparsity', 'finetune_tf', 'finetune')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--num-feat', type=int, default=64)
    p.add_argument('--num-block', type=int, default=30, help='residual blocks per branch (default 30, as the paper)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--frames', type=int, default=5, help='frames per training clip (the paper: 15)')
    p.add_argument('--size', type=int, nargs=2, default=[36, 36], metavar=('H', 'W'), help='LR patch size')
    p.add_argument('--ratio', type=float, default=0.5)
    p.add_argument('--fix-flow', action='store_true', help='freeze SPyNet in every model (default: trained)')
    p.add_argument('--iters', type=int, default=6, help='timed iterations per model (median reported)')
    p.add_argument('--warmup', type=int, default=2, help='untimed iterations per model first')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--json', type=Path, help='write the result here')
    p.add_argument('--md', type=Path, help='write a markdown table here')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.frames < 2 or not 0 < args.ratio < 1:
        p.error('need --iters >= 1, --warmup >= 0, --frames >= 2 and 0 < --ratio < 1')
    if min(args.size) <= 32:
        p.error('--size: BasicSR\'s SPyNet needs LR patches larger than 32 px')
    return args


def options(args, work: Path, name: str, init: Path, device: str) -> dict:
    """What BasicSR's parse_options makes of a training option file (one process, no data loaders needed)."""
    total = 10 ** 6
    exp = work / name
    return {
        'name': name, 'model_type': 'VideoRecurrentModel', 'scale': 4, 'is_train': True, 'dist': False, 'rank': 0,
        'world_size': 1, 'num_gpu': 1 if device == 'cuda' else 0, 'manual_seed': args.seed, 'auto_resume': False,
        'root_path': str(work),
        'network_g': {'type': 'BasicVSR', 'num_feat': args.num_feat, 'num_block': args.num_block, 'spynet_path': None},
        'path': {'pretrain_network_g': str(init), 'strict_load_g': True, 'resume_state': None, 'param_key_g': 'params',
                 'experiments_root': str(exp), 'models': str(exp / 'models'),
                 'training_states': str(exp / 'training_states'), 'log': str(exp),
                 'visualization': str(exp / 'visualization')},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total], 'restart_weights': [1],
                                'eta_min': 1e-7},
                  'total_iter': total, 'warmup_iter': -1, 'fix_flow': total + 1 if args.fix_flow else None,
                  'flow_lr_mul': 0.125,
                  'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': 100, 'save_checkpoint_freq': total, 'use_tb_logger': False},
    }


def build_models(args, work: Path, device: str) -> dict:
    import torch
    from basicsr.archs import build_network
    from basicsr.models import build_model

    from ssl_plugin.basicsr_plugin.checkpoint import atomic_torch_save

    torch.manual_seed(args.seed)
    init = work / 'init.pth'
    atomic_torch_save({'params': build_network({'type': 'BasicVSR', 'num_feat': args.num_feat,
                                                'num_block': args.num_block}).state_dict()}, str(init))
    base = options(args, work, 'plain', init, device)
    ssl = {'method': 'ssl', 'pruning_ratio': args.ratio, 'scope': 'local',
           'reg': {'delta': 1e-4, 'interval': 5, 'ceiling': 0.1, 'stabilize_iter': 14000}}  # stays in the stage
    specs = {'plain': base}
    for name, method, tf in (('sparsity', 'ssl', False), ('finetune_tf', 'l1', True), ('finetune', 'l1', False)):
        opt = copy.deepcopy(base)
        opt.update(name=name, model_type='SSLVideoRecurrentModel', ssl=dict(ssl, method=method))
        opt['train']['tf_opt'] = {'type': 'TFLoss', 'loss_weight': 1.0} if tf else None
        specs[name] = opt
    return {name: build_model(opt) for name, opt in specs.items()}


def batch(args):
    import torch
    g = torch.Generator().manual_seed(args.seed)
    h, w = args.size
    return {'lq': torch.rand(args.batch, args.frames, 3, h, w, generator=g),
            'gt': torch.rand(args.batch, args.frames, 3, 4 * h, 4 * w, generator=g)}


def time_models(models: dict, data: dict, iters: int, warmup: int, device: str) -> dict:
    """Seconds per ``feed_data`` + ``optimize_parameters`` of each model, the models taking turns."""
    import torch

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    times = {name: [] for name in models}
    for it in range(1, warmup + iters + 1):
        for name, model in models.items():
            sync()
            start = time.perf_counter()
            model.feed_data(data)
            model.optimize_parameters(it)
            sync()
            if it > warmup:
                times[name].append(time.perf_counter() - start)
    return times


def describe_machine(device: str) -> str:
    import torch
    if device == 'cuda':
        return f'{torch.cuda.get_device_name(0)}; torch {torch.__version__}'
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                   if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{cpu}, {torch.get_num_threads()} threads; torch {torch.__version__}'



def markdown(result: dict) -> str:
    s, med = result['settings'], result['median_seconds']
    fast = result['fastest_seconds']
    lines = ['| Training iteration | Fastest s/iter | Median s/iter | vs plain VideoRecurrentModel (fastest) |',
             '|---|---:|---:|---:|']
    labels = {'plain': 'plain `VideoRecurrentModel` (dense)', 'sparsity': 'SSL sparsity stage (γ + L_SIR, dense)',
              'finetune_tf': 'SSL finetuning with TF (pruned + frozen teacher)',
              'finetune': 'finetuning without TF (pruned)'}
    for name in MODELS:
        lines.append(f'| {labels[name]} | {fast[name]:.3f} | {med[name]:.3f} | x{fast[name] / fast["plain"]:.2f} |')
    r = result['ratios']
    lines += ['', f'TF on the pruned network: x{r["finetune_tf_vs_finetune"]:.2f} of finetuning without TF. '
                  f'BasicVSR num_feat {s["num_feat"]}, num_block {s["num_block"]}, batch {s["batch"]} x '
                  f'{s["frames"]} frames of {s["size"][0]}x{s["size"][1]} LR px, ratio {s["ratio"]} (local), SPyNet '
                  f'{"frozen" if s["fix_flow"] else "trained"}; {s["iters"]} interleaved iterations per model after '
                  f'{s["warmup"]} warm-up. Machine: {result["machine"]}.']
    return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from ssl_plugin.basicsr_plugin import register
    register()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda':
        torch.backends.cudnn.benchmark = True
    logging.getLogger('basicsr').setLevel(logging.WARNING)  # BasicSR prints every network it builds
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args, Path(tmp), device)
        times = time_models(models, batch(args), args.iters, args.warmup, device)
    # Each model measured what it claims to: the stages did not change while timing.
    stages = {name: (m.controller.stage, m.controller.uses_tf) for name, m in models.items() if name != 'plain'}
    expected = {'sparsity': ('sparsity', False), 'finetune_tf': ('finetune', True), 'finetune': ('finetune', False)}
    if stages != expected:
        raise RuntimeError(f'unexpected SSL stages while timing: {stages}')
    med = {name: statistics.median(t) for name, t in times.items()}
    fast = {name: min(t) for name, t in times.items()}

    def ratios(t):
        return {'sparsity_vs_plain': t['sparsity'] / t['plain'], 'finetune_tf_vs_plain': t['finetune_tf'] / t['plain'],
                'finetune_vs_plain': t['finetune'] / t['plain'],
                'finetune_tf_vs_finetune': t['finetune_tf'] / t['finetune']}
    result = {
        'settings': {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ('json', 'md')},
        'device': device, 'machine': describe_machine(device), 'code': code_version(),
        'fastest_seconds': fast, 'median_seconds': med, 'seconds': times,
        'ratios': ratios(fast), 'median_ratios': ratios(med),
        'command': 'python benchmarks/overhead.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
    }
    text = markdown(result)
    print(text)
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2) + '\n')
    if args.md:
        write_atomic(args.md, text)
    return result


if __name__ == '__main__':
    main()
