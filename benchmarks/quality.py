"""Quality benchmark: a small replication of the paper's comparison, every network trained through BasicSR's own
pipeline (``ssl_plugin/train.py`` on option files this script writes into the work folder, so each run can be
repeated by hand).

All pruned networks start from the same dense teacher, use the same pruning ratio and the same finetuning budget:

* ``ssl``            SSL: sparsity stage (L_SIR on γ) -> prune (RSC) -> finetuning with Temporal Finetuning (TF);
* ``ssl_no_tf``      the same pruned network finetuned without TF (it resumes the ``ssl`` run's training state at
  the pruning iteration, so both finetune exactly the same pruned weights);
* ``ssl_keep_conv2`` SSL with the last conv of every residual block left unpruned (``ssl.skip: ['*.conv2']``): the
  restriction of earlier residual-network pruning that RSC removes;
* ``l1``             L1-norm pruning: the same units chosen by L1 norm are cut at once, then finetuned with TF;
* ``lite``           BasicVSR-lite: BasicVSR with ``num_feat`` x (1 - ratio) channels, trained from scratch for the
  teacher's plus the finetuning budget. BasicSR's BasicVSR hard-codes 64 channels in ``upconv2`` / ``conv_hr`` /
  ``conv_last``; SSL prunes them, a narrower BasicVSR keeps them, so the lite network has more MACs than the pruned
  one (both are reported).

Evaluation: PSNR / SSIM (``basicsr.metrics``, RGB and Y, no border crop) on test clips no run trained on, params and
MACs (torch's FLOP counter), with and without SPyNet (which SSL does not prune). Writes ``quality.json`` and
``quality.md`` to ``--out``, then the scaling-factor and hidden-state plots of the ``ssl`` runs (``--no-plots``
skips them).

Default data (CPU: 21 min measured on 2 shared cores, up to ~40 under heavier load): the real clips bundled with
the project, BI x4: bikes frames 0-199 (two 100-frame clips) for training, the first 50 frames of carphone (another
scene) for testing. No pretrained weights can be downloaded here, so SPyNet starts at zero flow (its last conv per
level zeroed) and stays frozen in every run: the small networks recur without motion compensation.
``--spynet-path`` gives it real weights.

    python benchmarks/quality.py                                  # everything, defaults above
    python benchmarks/quality.py --data-gt datasets/REDS/train_sharp \\
        --data-lq datasets/REDS/train_sharp_bicubic/X4 --meta-info meta_info_REDS_GT.txt --test-clips 000,011,015,020 \\
        --test-frames 0 --num-feat 64 --num-block 30 ...          # REDS on a GPU (see the README)

With ``--pretrained`` no teacher is trained, but ``--dense-iters`` still sets the lite network's budget (it trains for
``--dense-iters`` + ``--finetune-iters``): give the teacher's training length there.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark_env import code_version, write_atomic  # noqa: E402  (benchmarks/ is the script directory)

import ssl_plugin  # noqa: E402,F401  (host compatibility shims before basicsr)

TRAIN = REPO / 'ssl_plugin' / 'train.py'
DATA = Path('data') / 'quality_x4'
#: (clip, first source frame, end, clip length, names): training clips first, then the test clip.
SOURCES = (('bikes', 0, 200, 100, ['001', '002']), ('carphone', 0, 120, None, ['000']))
LABELS = {
    'bicubic': 'Bicubic upsampling',
    'dense': 'BasicVSR (dense teacher)',
    'ssl': 'SSL (SIR + RSC + TF)',
    'ssl_no_tf': 'SSL without TF',
    'ssl_keep_conv2': 'SSL, last residual conv unpruned',
    'l1': 'L1-norm pruning (+TF)',
    'lite': 'BasicVSR-lite (from scratch)',
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group('data (default: built from the bundled clips)')
    g.add_argument('--data-gt', help='GT root (REDS layout: <root>/<clip>/<%%08d>.png)')
    g.add_argument('--data-lq', help='LQ root, same layout')
    g.add_argument('--meta-info', help="BasicSR meta-info file of the training clips ('<clip> <frames> (h,w,c)')")
    g.add_argument('--test-clips', default='000', help='comma-separated test clips under the same roots; BasicSR '
                                                       "holds REDS4's 000,011,015,020 out of training (default 000)")
    g.add_argument('--test-frames', type=int, default=50,
                   help='use only the first N frames of each test clip (default 50; 0: all)')
    g = p.add_argument_group('network and training')
    g.add_argument('--num-feat', type=int, default=16, help='BasicVSR num_feat (default 16; the paper: 64)')
    g.add_argument('--num-block', type=int, default=3, help='residual blocks per branch (default 3; the paper: 30)')
    g.add_argument('--lite-feat', type=int, help='BasicVSR-lite num_feat (default: num_feat x (1 - ratio))')
    g.add_argument('--ratio', type=float, default=0.5, help='pruning ratio (default 0.5)')
    g.add_argument('--scope', choices=['local', 'global'], default='local',
                   help="'local' (default): the same fraction of every layer. In a small, briefly trained network "
                        "the global pool is led by the residual convs (BasicSR initialises them x0.1), so 'global' "
                        'would hardly touch the full-resolution convs that hold most MACs; the paper uses global.')
    g.add_argument('--batch', type=int, default=1, help='batch size (default 1: more, cheaper steps; the paper: 8)')
    g.add_argument('--num-frame', type=int, default=5, help='frames per training clip (default 5; the paper: 15)')
    g.add_argument('--gt-size', type=int, default=144, help='GT crop (default 144: LR 36 px; the paper: 256)')
    g.add_argument('--lr', type=float, default=2e-3, help='Adam learning rate of every run (default 2e-3)')
    g.add_argument('--dense-iters', type=int, default=600, help='iterations of the dense teacher (default 600)')
    g.add_argument('--pretrained', help='a dense BasicVSR net_g_*.pth to use as the teacher instead of training one')
    g.add_argument('--reg-delta', type=float, default=0.002, help='SIR: α increment Δ (default 0.002)')
    g.add_argument('--reg-interval', type=int, default=1, help='SIR: iterations between increments T1 (default 1)')
    g.add_argument('--reg-ceiling', type=float, default=0.1, help='SIR: α ceiling τ (default 0.1)')
    g.add_argument('--stabilize-iters', type=int, default=150,
                   help='SIR: iterations at the ceiling T2 (default 150; with the defaults above the sparsity '
                        'stage is 50 + 150 iterations)')
    g.add_argument('--finetune-iters', type=int, default=300, help='finetuning budget of every pruned network and '
                                                                   'extra budget of the lite one (default 300)')
    g.add_argument('--spynet-path', help='pretrained SPyNet weights (BasicSR network_g.spynet_path); default: none, '
                                         'SPyNet starts at zero flow')
    g.add_argument('--fix-flow', type=int, help='train SPyNet from this iteration of each run on (default: frozen)')
    g = p.add_argument_group('running')
    g.add_argument('--work-dir', default='experiments/quality_benchmark', help='runs, option files, logs')
    g.add_argument('--out', default='docs/results', help='where quality.json / quality.md / plots go')
    g.add_argument('--jobs', type=int, default=2, help='training runs at a time (default 2)')
    g.add_argument('--threads', type=int, default=1, help='CPU threads per run (default 1)')
    g.add_argument('--workers', type=int, default=0, help='data loader workers per run (default 0)')
    g.add_argument('--print-freq', type=int, default=10)
    g.add_argument('--seed', type=int, default=0)
    g.add_argument('--eval-only', action='store_true', help='skip training: evaluate the runs in --work-dir')
    g.add_argument('--no-plots', action='store_true', help='do not make the scaling-factor / hidden-state plots')
    args = p.parse_args(argv)
    if not 0 < args.ratio < 1:
        p.error('--ratio must lie in (0, 1)')
    if bool(args.data_gt) != bool(args.data_lq) or (args.data_gt and not args.meta_info):
        p.error('--data-gt, --data-lq and --meta-info go together')
    for name in ('dense_iters', 'finetune_iters', 'jobs', 'threads', 'batch', 'num_frame'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


def say(msg: str) -> None:
    print(f'[quality {time.strftime("%H:%M:%S")}] {msg}', flush=True)


# ------------------------------------------------------------------------------------------------------- data
def build_data(work: Path) -> tuple[Path, Path, Path]:
    """The default dataset (bikes -> training clips 001/002, carphone -> test clip 000), built once."""
    from ssl_plugin.tools.clips import fetch_clips
    from ssl_plugin.tools.make_dataset import build_dataset

    out = work / DATA
    record = out / 'dataset.json'
    wanted = {n for *_, names in SOURCES for n in names}
    if not (record.exists() and wanted <= set(json.loads(record.read_text()).get('clips', {}))):
        paths = fetch_clips(names=sorted({src for src, *_ in SOURCES}))
        for i, (src, start, end, clip_len, names) in enumerate(SOURCES):
            say(f'dataset: {src} frames {start}..{end - 1} -> clip(s) {",".join(names)}')
            build_dataset(paths[src], out, degradations=['BI'], start=start, end=end, clip_len=clip_len,
                          names=names, overwrite=(i == 0), append=(i > 0))
    return out / 'GT', out / 'BIx4', out / 'meta_info_train.txt'


# ------------------------------------------------------------------------------------------------------- options
def sparsity_iters(args) -> int:
    """Length of the sparsity stage for the SIR schedule of ``args`` (α grows alike for every unit)."""
    import torch

    from ssl_plugin.core.sir import SparsityRegularizer
    return SparsityRegularizer({'any': torch.zeros(1, dtype=torch.int64)}, args.reg_delta, args.reg_interval,
                               args.reg_ceiling, args.stabilize_iters).total_iters()


def base_options(args, name: str, gt: Path, lq: Path, meta: Path, num_feat: int, total: int) -> dict:
    """A plain BasicSR VideoRecurrentModel run (paths absolute, so the file works from any folder)."""
    return {
        'name': name, 'model_type': 'VideoRecurrentModel', 'scale': 4, 'num_gpu': 'auto',
        'manual_seed': args.seed,
        'datasets': {'train': {
            'name': 'train', 'type': 'REDSRecurrentDataset', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq),
            'meta_info_file': str(meta), 'val_partition': 'REDS4', 'test_mode': False,
            'io_backend': {'type': 'disk'}, 'num_frame': args.num_frame, 'gt_size': args.gt_size,
            'interval_list': [1], 'random_reverse': False, 'use_hflip': True, 'use_rot': True,
            'num_worker_per_gpu': args.workers, 'batch_size_per_gpu': args.batch, 'dataset_enlarge_ratio': 1000,
            'prefetch_mode': None}},
        'network_g': {'type': 'BasicVSR', 'num_feat': num_feat, 'num_block': args.num_block,
                      'spynet_path': str(Path(args.spynet_path).resolve()) if args.spynet_path else None},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': args.lr, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total], 'restart_weights': [1],
                          'eta_min': 1e-7},
            'total_iter': total, 'warmup_iter': -1,
            'fix_flow': args.fix_flow if args.fix_flow else total + 1, 'flow_lr_mul': 0.125,
            'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': args.print_freq, 'save_checkpoint_freq': total, 'use_tb_logger': True},
        'dist_params': {'backend': 'gloo', 'port': 29500},
        'find_unused_parameters': True,
    }


def ssl_options(args, base: dict, name: str, teacher: Path, tf: bool = True, method: str = 'ssl',
                skip=()) -> dict:
    """SSLVideoRecurrentModel on top of ``base``: same data / network / optimizer, the ``ssl:`` section, TF."""
    s = sparsity_iters(args) if method == 'ssl' else 0
    opt = copy.deepcopy(base)
    opt['name'] = name
    opt['model_type'] = 'SSLVideoRecurrentModel'
    opt['path']['pretrain_network_g'] = str(teacher)
    opt['ssl'] = {'method': method, 'pruning_ratio': args.ratio, 'scope': args.scope, 'align': 1,
                  'skip': list(skip),
                  'reg': {'delta': args.reg_delta, 'interval': args.reg_interval, 'ceiling': args.reg_ceiling,
                          'stabilize_iter': args.stabilize_iters}}
    t = opt['train']
    t['total_iter'] = s + args.finetune_iters
    t['fix_flow'] = args.fix_flow if args.fix_flow else t['total_iter'] + 1
    t['scheduler']['periods'] = [args.finetune_iters]
    t['scheduler_starts_at_finetune'] = True  # the paper: constant lr while sparsifying, a fresh cosine to finetune
    t['tf_opt'] = {'type': 'TFLoss', 'loss_weight': 1.0} if tf else None  # None: finetune without TF
    # The checkpoint and training state saved at the pruning iteration: the pruned network before finetuning and
    # the unpruned teacher (for the hidden-state plot and the no-TF run).
    opt['logger']['save_checkpoint_freq'] = s if s else t['total_iter']
    opt['logger']['ssl_per_layer'] = True
    return opt


def write_yaml(opt: dict, path: Path) -> Path:
    import yaml
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def zero_flow_init(network_opt: dict, path: Path, seed: int) -> Path:
    """A freshly initialised network whose SPyNet outputs zero flow (last conv of every level zeroed): without
    pretrained flow weights this is the neutral start (identity warping) instead of a random flow field."""
    import torch
    from basicsr.archs import build_network

    from ssl_plugin.basicsr_plugin.checkpoint import atomic_torch_save

    torch.manual_seed(seed)
    net = build_network(copy.deepcopy(network_opt))
    if not network_opt.get('spynet_path'):
        with torch.no_grad():
            for level in net.spynet.basic_module:
                last = [m for m in level.modules() if isinstance(m, torch.nn.Conv2d)][-1]
                last.weight.zero_()
                last.bias.zero_()
    atomic_torch_save({'params': net.state_dict()}, str(path))
    return path


# ------------------------------------------------------------------------------------------------------- runs
class Run:
    def __init__(self, name: str, yml: Path | None, deps=(), prepare=None):
        self.name, self.yml, self.deps, self.prepare = name, yml, set(deps), prepare
        self.proc = self.log = self.start = None
        self.seconds = None


def launch(run: Run, work: Path, threads: int) -> None:
    if run.prepare is not None:
        run.prepare()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS='ignore')
    (work / 'logs').mkdir(exist_ok=True)
    run.log = open(work / 'logs' / f'{run.name}.txt', 'w')
    cmd = [sys.executable, str(TRAIN), '-opt', str(run.yml)]
    say(f'start {run.name}: {" ".join(cmd[1:])}')
    run.start = time.time()
    run.proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=run.log, stderr=subprocess.STDOUT)


def run_all(runs: list[Run], work: Path, jobs: int, threads: int) -> dict:
    """Run the trainings, at most ``jobs`` at a time, each after the runs it depends on."""
    pending, active, done = list(runs), [], {}
    while pending or active:
        for run in [r for r in pending if r.deps <= set(done)]:
            if len(active) >= jobs:
                break
            pending.remove(run)
            launch(run, work, threads)
            active.append(run)
        if not active and pending:
            raise RuntimeError(f'unsatisfiable dependencies: {[r.name for r in pending]}')
        time.sleep(2)
        for run in list(active):
            rc = run.proc.poll()
            if rc is None:
                continue
            run.log.close()
            active.remove(run)
            run.seconds = time.time() - run.start
            if rc != 0:
                for other in active:
                    other.proc.terminate()
                tail = (work / 'logs' / f'{run.name}.txt').read_text()[-3000:]
                raise SystemExit(f'{run.name} failed (exit {rc}); log {work / "logs" / run.name}.txt:\n{tail}')
            done[run.name] = run.seconds
            say(f'done  {run.name} in {run.seconds / 60:.1f} min')
    return done


def copy_for_resume(src_exp: Path, dst_exp: Path, it: int) -> Path:
    """Give the no-TF run the ``ssl`` run's pruned checkpoint and training state at the pruning iteration (BasicSR
    resumes from ``<exp>/training_states/<it>.state`` and ``<exp>/models/net_g_<it>.pth``)."""
    for sub, name in (('models', f'net_g_{it}.pth'), ('training_states', f'{it}.state')):
        (dst_exp / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_exp / sub / name, dst_exp / sub / name)
    return dst_exp / 'training_states' / f'{it}.state'


# ------------------------------------------------------------------------------------------------------- evaluation
def macs(net, x, keep_output: bool = False):
    """MACs of one forward on ``x``: total and without SPyNet (torch's FLOP counter, 2 FLOPs per MAC); with
    ``keep_output`` also the forward's output."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = net(x)
    counts = counter.get_flop_counts()
    spynet = sum(v for k, ops in counts.items() if k.endswith('.spynet') for v in ops.values())
    total = counter.get_total_flops()
    result = (total // 2, (total - spynet) // 2)
    return (result, out) if keep_output else result


def read_clip(root: Path, name: str, frames: int | None):
    from basicsr.data.data_util import read_img_seq
    paths = sorted(str(p) for p in (root / name).glob('*.png'))
    if frames:
        paths = paths[:frames]
    if not paths:
        raise FileNotFoundError(f'no frames in {root / name}')
    return read_img_seq(paths)


def quality(out, gt) -> dict:
    """Mean over frames of PSNR / SSIM on RGB and on Y (BasicSR's metrics on uint8 images)."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img

    scores = {'psnr_rgb': [], 'ssim_rgb': [], 'psnr_y': [], 'ssim_y': []}
    for i in range(gt.shape[0]):
        img, ref = tensor2img([out[i]]), tensor2img([gt[i]])
        for y in (False, True):
            tag = 'y' if y else 'rgb'
            scores[f'psnr_{tag}'].append(calculate_psnr(img, ref, crop_border=0, test_y_channel=y))
            scores[f'ssim_{tag}'].append(calculate_ssim(img, ref, crop_border=0, test_y_channel=y))
    return {k: statistics.mean(v) for k, v in scores.items()}


def evaluate(args, work: Path, gt_root: Path, lq_root: Path, prune_at: int, lite_feat: int) -> dict:
    import torch
    import torch.nn.functional as F
    from basicsr.archs import build_network

    from ssl_plugin.basicsr_plugin import load_pruned_network, register
    from ssl_plugin.core.algorithm import SSLConfig, SSLController
    register()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    exp = work / 'experiments'
    net_opt = {'type': 'BasicVSR', 'num_feat': args.num_feat, 'num_block': args.num_block}
    teacher = Path(args.pretrained) if args.pretrained else exp / 'dense' / 'models' / 'net_g_latest.pth'

    def load(path, opt=net_opt):
        return load_pruned_network(build_network(dict(opt)), str(path)).to(device).eval()

    def l1_before():
        net = load(teacher)
        cfg = SSLConfig.from_dict({'method': 'l1', 'pruning_ratio': args.ratio, 'scope': args.scope})
        SSLController(cfg).start(net, keep_teacher=False)
        return net

    nets = {'dense': (lambda: load(teacher), None),
            'ssl': (lambda: load(exp / 'ssl' / 'models' / 'net_g_latest.pth'),
                    lambda: load(exp / 'ssl' / 'models' / f'net_g_{prune_at}.pth')),
            'ssl_no_tf': (lambda: load(exp / 'ssl_no_tf' / 'models' / 'net_g_latest.pth'), None),
            'ssl_keep_conv2': (lambda: load(exp / 'ssl_keep_conv2' / 'models' / 'net_g_latest.pth'),
                               lambda: load(exp / 'ssl_keep_conv2' / 'models' / f'net_g_{prune_at}.pth')),
            'l1': (lambda: load(exp / 'l1' / 'models' / 'net_g_latest.pth'), l1_before),
            'lite': (lambda: load(exp / 'lite' / 'models' / 'net_g_latest.pth', dict(net_opt, num_feat=lite_feat)),
                     None)}
    clips = [c for c in args.test_clips.split(',') if c]
    data = {c: (read_clip(lq_root, c, args.test_frames), read_clip(gt_root, c, args.test_frames)) for c in clips}
    rows = {}
    with torch.no_grad():
        per_clip = []
        for lq, gt in data.values():
            up = F.interpolate(lq, scale_factor=gt.shape[-1] / lq.shape[-1], mode='bicubic', align_corners=False)
            per_clip.append(quality(up.clamp(0, 1), gt))
        rows['bicubic'] = {k: statistics.mean(c[k] for c in per_clip) for k in per_clip[0]}
        for key, (final, before) in nets.items():
            say(f'evaluating {key}')
            row = {}
            for tag, make in (('', final), ('before_ft_', before)):
                if make is None:
                    continue
                net = make()
                per_clip = []
                for i, (lq, gt) in enumerate(data.values()):
                    if i == 0 and not tag:  # MACs counted on the first test clip's forward itself
                        (total, no_flow), sr = macs(net, lq.unsqueeze(0).to(device), keep_output=True)
                        frames = lq.shape[0]
                    else:
                        sr = net(lq.unsqueeze(0).to(device))
                    per_clip.append(quality(sr[0].cpu(), gt))
                row.update({tag + k: statistics.mean(c[k] for c in per_clip) for k in per_clip[0]})
                if not tag:
                    params = sum(p.numel() for p in net.parameters())
                    flow_params = sum(p.numel() for p in net.spynet.parameters())
                    row.update(params=params, params_wo_spynet=params - flow_params,
                               macs_per_frame=total / frames, macs_per_frame_wo_spynet=no_flow / frames)
                del net
            rows[key] = row
    if 'ssl' in rows and 'before_ft_psnr_rgb' in rows['ssl']:  # the no-TF run resumed from the same pruned weights
        rows['ssl_no_tf'].update({k: v for k, v in rows['ssl'].items() if k.startswith('before_ft_')})
    return {'rows': rows, 'test_clips': {c: {'frames': int(lq.shape[0]), 'lq': list(lq.shape[-2:]),
                                             'gt': list(gt.shape[-2:])} for c, (lq, gt) in data.items()},
            'device': str(device)}


# ------------------------------------------------------------------------------------------------------- output
def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    gpu = f', GPU {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else ''
    return f'{cpu}, {cores} cores{gpu}; torch {torch.__version__}, Python {platform.python_version()}'



def markdown(result: dict) -> str:
    rows, s = result['rows'], result['settings']
    lines = [
        '| Method | Params (w/o SPyNet) | GMACs/frame (w/o SPyNet) | PSNR RGB | SSIM RGB | PSNR Y | SSIM Y | '
        'PSNR RGB before finetuning |',
        '|---|---:|---:|---:|---:|---:|---:|---:|']
    for key, label in LABELS.items():
        r = rows.get(key)
        if r is None:
            continue
        if 'params' in r:
            cost = (f'{r["params"] / 1e6:.3f} M ({r["params_wo_spynet"] / 1e3:.1f} k) | '
                    f'{r["macs_per_frame"] / 1e9:.3f} ({r["macs_per_frame_wo_spynet"] / 1e9:.3f})')
        else:
            cost = '– | –'
        before = f'{r["before_ft_psnr_rgb"]:.2f}' if 'before_ft_psnr_rgb' in r else '–'
        if key == 'lite':
            label = f'{label}, num_feat {s["lite_feat"]}'
        lines.append(f'| {label} | {cost} | {r["psnr_rgb"]:.2f} | {r["ssim_rgb"]:.4f} | {r["psnr_y"]:.2f} | '
                     f'{r["ssim_y"]:.4f} | {before} |')
    clips = ', '.join(f'{c} ({v["frames"]} frames, LR {v["lq"][1]}x{v["lq"][0]})'
                      for c, v in result['test_clips'].items())
    lines += ['', f'BasicVSR num_feat {s["num_feat"]}, num_block {s["num_block"]}, BI x4; pruning ratio {s["ratio"]} '
                  f'({s["scope"]}); dense teacher {s["dense_iters"]} iterations, sparsity stage '
                  f'{s["sparsity_iters"]}, finetuning {s["finetune_iters"]}, lite {s["lite_iters"]} from scratch; '
                  f'batch {s["batch"]} x {s["num_frame"]} frames, GT crop {s["gt_size"]}, Adam lr {s["lr"]}. '
                  f'Test clip(s): {clips}. Machine: {result["machine"]}; total {result["minutes"]:.0f} min.']
    return '\n'.join(lines) + '\n'


def make_plots(work: Path, out: Path, prune_at: int, lq_root: Path, test_clip: str, frames: int | None) -> list[str]:
    """The supplementary figures from the ``ssl`` runs: γ of pruned / kept units in the sparsity stage; hidden states
    of the pruned network before finetuning and after finetuning with / without TF against the unpruned teacher.
    Returns the equivalent command lines (paths relative to the current folder)."""
    from ssl_plugin.tools import plot_hidden_states, plot_scaling_factors

    def arguments(base: Path) -> tuple[list[str], list[str]]:
        exp = base / 'experiments'
        sf = [str(exp / 'ssl'), '--out', str(out / 'scaling_factors')]
        hs = ['--opt', str(base / 'options' / 'ssl.yml'),
              '--ckpt', str(exp / 'ssl' / 'models' / f'net_g_{prune_at}.pth'),
              str(exp / 'ssl' / 'models' / 'net_g_latest.pth'), str(exp / 'ssl_no_tf' / 'models' / 'net_g_latest.pth'),
              '--labels', 'pruned, before finetuning', 'finetuned with TF', 'finetuned without TF',
              '--teacher', str(exp / 'ssl' / 'training_states' / f'{prune_at}.state'),
              '--lq', str(lq_root / test_clip), '--out', str(out / 'hidden_states')]
        if frames:
            hs += ['--frames', str(frames)]
        return sf, hs

    sf, hs = arguments(work)
    plot_scaling_factors.main(sf)
    plot_hidden_states.main(hs)
    return [f'python -m ssl_plugin.tools.plot_scaling_factors {shown(sf)}',
            f'python -m ssl_plugin.tools.plot_hidden_states {shown(hs)}']


def shown(argv: list[str]) -> str:
    """A command line for people: paths relative to the current folder, quoted where needed."""
    here = Path.cwd()

    def rel(a: str) -> str:
        p = Path(a)
        return os.path.relpath(p, here) if p.is_absolute() and p.is_relative_to(here) else a
    return ' '.join(shlex.quote(rel(a)) for a in argv)


# ------------------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    import torch
    torch.set_num_threads(args.threads)  # evaluation too: oversubscribed threads are slower on a shared machine
    from ssl_plugin.basicsr_plugin import register
    register()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve()
    if args.data_gt:
        gt, lq, meta = Path(args.data_gt).resolve(), Path(args.data_lq).resolve(), Path(args.meta_info).resolve()
    else:
        gt, lq, meta = build_data(work)
    test_clip = args.test_clips.split(',')[0]
    prune_at = sparsity_iters(args)
    lite_feat = args.lite_feat or max(1, round(args.num_feat * (1 - args.ratio)))
    lite_iters = args.dense_iters + args.finetune_iters
    say(f'sparsity stage {prune_at} iterations, finetuning {args.finetune_iters}; BasicVSR-lite num_feat {lite_feat}')

    exp = work / 'experiments'
    opts = work / 'options'
    dense = base_options(args, 'dense', gt, lq, meta, args.num_feat, args.dense_iters)
    teacher = Path(args.pretrained).resolve() if args.pretrained else exp / 'dense' / 'models' / 'net_g_latest.pth'
    runs = []
    if not args.pretrained:
        dense['path']['pretrain_network_g'] = str(zero_flow_init(dense['network_g'], work / 'init_dense.pth',
                                                                  args.seed))
        runs.append(Run('dense', write_yaml(dense, opts / 'dense.yml')))
    lite = base_options(args, 'lite', gt, lq, meta, lite_feat, lite_iters)
    lite['path']['pretrain_network_g'] = str(zero_flow_init(lite['network_g'], work / 'init_lite.pth', args.seed))
    runs.append(Run('lite', write_yaml(lite, opts / 'lite.yml')))
    needs = () if args.pretrained else ('dense',)
    ssl = ssl_options(args, dense, 'ssl', teacher)
    runs.append(Run('ssl', write_yaml(ssl, opts / 'ssl.yml'), deps=needs))
    keep = ssl_options(args, dense, 'ssl_keep_conv2', teacher, skip=['*.conv2'])
    runs.append(Run('ssl_keep_conv2', write_yaml(keep, opts / 'ssl_keep_conv2.yml'), deps=needs))
    l1 = ssl_options(args, dense, 'l1', teacher, method='l1')
    runs.append(Run('l1', write_yaml(l1, opts / 'l1.yml'), deps=needs))
    no_tf = ssl_options(args, dense, 'ssl_no_tf', teacher, tf=False)
    no_tf['path']['resume_state'] = str(exp / 'ssl_no_tf' / 'training_states' / f'{prune_at}.state')
    runs.append(Run('ssl_no_tf', write_yaml(no_tf, opts / 'ssl_no_tf.yml'), deps=('ssl',),
                    prepare=lambda: copy_for_resume(exp / 'ssl', exp / 'ssl_no_tf', prune_at)))

    seconds = {}
    if not args.eval_only:
        for run in runs:  # a rerun starts clean (BasicSR would rename the old folders to *_archived_<time>)
            for folder in (exp / run.name, work / 'tb_logger' / run.name):
                shutil.rmtree(folder, ignore_errors=True)
        seconds = run_all(runs, work, args.jobs, args.threads)
    say('evaluating on the test clip(s)')
    result = evaluate(args, work, gt, lq, prune_at, lite_feat)
    result.update(
        settings={**{k: v for k, v in vars(args).items() if k not in ('eval_only', 'no_plots')},
                  'sparsity_iters': prune_at, 'lite_feat': lite_feat, 'lite_iters': lite_iters},
        run_seconds=seconds, machine=machine(), minutes=(time.time() - t0) / 60, code=code_version(),
        command='python benchmarks/quality.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
        option_files={r.name: str(r.yml.relative_to(work)) for r in runs})
    if not args.no_plots:
        result['plot_commands'] = make_plots(work, out, prune_at, lq, test_clip, args.test_frames)
    write_atomic(out / 'quality.json', json.dumps(result, indent=2) + '\n')
    write_atomic(out / 'quality.md', markdown(result))
    print(markdown(result))
    say(f'wrote {out / "quality.md"} and {out / "quality.json"}')
    return result


if __name__ == '__main__':
    main()
