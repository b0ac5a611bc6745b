"""Quality benchmark: a small replication of the paper's comparison, every network trained through BasicSR's own
pipeline (``ssl_plugin/train.py`` on option files this script writes into the work folder, so each run can be
repeated by hand).

All pruned networks start from the same dense teacher (default: the trained teacher of ``benchmarks/teacher.py``,
``--backbone bi|uni|both``) and use the same data and finetuning budget. ``--budget lite`` (the default) matches
params as the paper does: every pruned network gets ``ssl.target_params_ratio`` = dense / lite params, counted without
SPyNet (``ssl.budget_exclude: [spynet]``), so each method's own selection decides where the cut goes;
``--budget ratio`` uses one pruning ratio (``--ratio``) for all instead. The methods:

* ``ssl``            SSL: sparsity stage (L_SIR on γ) -> prune (RSC) -> finetuning with Temporal Finetuning (TF), the
  TF teacher being the network at the end of the sparsity stage (the default);
* ``ssl_no_tf``      the same pruned network finetuned without TF (it resumes the ``ssl`` run's training state at
  the pruning iteration, so both finetune exactly the same pruned weights);
* ``ssl_tf_dense``   SSL with the original dense network as TF teacher (``ssl.tf_teacher``);
* ``ssl_keep_conv2`` SSL with the last conv of every residual block left unpruned (``ssl.skip: ['*.conv2']``): the
  restriction of earlier residual-network pruning that RSC removes;
* ``ssl_global``     SSL with the raw global pool (``scope: global``, the paper's rule literally; the default selection
  is ``global_normalized``);
* ``l1``             L1-norm pruning: the same units chosen by L1 norm are cut at once, then finetuned with TF;
* ``l1_long``        the same, finetuned for the sparsity stage's iterations too: as many training iterations
  after the teacher as ``ssl`` (which trains through its sparsity stage), so the SSL / L1 gap is not extra training;
* ``aligned``        the ASSL-style baseline (``method: aligned``): one kept channel set per skip path, so the hidden
  state itself gets thinner; TF compares the kept channels;
* ``lite``           BasicVSR-lite: ``num_feat`` x (1 - ratio) channels, trained from scratch for the teacher's plus
  the finetuning budget. BasicSR's BasicVSR hard-codes 64 channels in ``upconv2`` / ``conv_hr`` / ``conv_last``;
  SSL prunes them, a narrower BasicVSR keeps them, so the lite network has more MACs than the pruned one.

``ssl``, ``l1``, ``l1_long`` and ``aligned`` run once per ``--seeds`` entry (mean and spread). Before training, each
selection is resolved on the teacher (as the run will resolve it); a method whose budget its settings cannot reach is
left out and named in the output instead of failing the whole benchmark.

Evaluation: PSNR / SSIM (``basicsr.metrics``, RGB and Y, no border crop) on the teacher's never-seen test segments
(bikes 210-249, carphone 90-119: two scenes), params and MACs (torch's FLOP counter) with and without SPyNet (which
SSL does not prune), CPU seconds per frame. Writes ``quality_<backbone>.json`` / ``.md`` to ``--out``, then the
scaling-factor and hidden-state plots of the ``ssl`` run (``--no-plots`` skips them). No pretrained weights can be
downloaded here, so SPyNet starts at zero flow and stays frozen (as in the teacher).

    python benchmarks/quality.py --backbone both --seeds 0 1       # trained teachers (cached), all methods
    python benchmarks/quality.py --legacy-data                     # the earlier 16/3 setting, teacher trained here
    python benchmarks/quality.py --data-gt datasets/REDS/train_sharp \\
        --data-lq datasets/REDS/train_sharp_bicubic/X4 --meta-info meta_info_REDS_GT.txt --test-clips 000,011,015,020 \\
        --num-feat 64 --num-block 30 --pretrained BasicVSR_REDS4.pth ...   # REDS on a GPU (see the README)

With ``--pretrained`` no teacher is trained or looked up; ``--dense-iters`` then sets the lite network's budget (it
trains for ``--dense-iters`` + ``--finetune-iters``): give the teacher's training length there.
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
#: (clip, first source frame, end, clip length, names): training clips first, then the test clip (``--legacy-data``).
SOURCES = (('bikes', 0, 200, 100, ['001', '002']), ('carphone', 0, 120, None, ['000']))
#: The trained teacher's never-seen test segments (benchmarks/teacher.py): two scenes, no frame of them trained on.
TEACHER_TEST = 'bikes_test,carphone_test'
METHODS = ('ssl', 'ssl_no_tf', 'ssl_keep_conv2', 'ssl_tf_dense', 'ssl_global', 'l1', 'l1_long', 'aligned', 'lite')
#: Methods run once per ``--seeds`` entry (the others once, seed ``--seeds[0]``).
SEEDED = ('ssl', 'l1', 'l1_long', 'aligned')
LABELS = {
    'bicubic': 'Bicubic upsampling',
    'dense': 'BasicVSR (dense teacher)',
    'ssl': 'SSL (SIR + RSC + TF)',
    'ssl_no_tf': 'SSL without TF',
    'ssl_keep_conv2': 'SSL, last residual conv unpruned',
    'ssl_tf_dense': 'SSL, TF teacher = original dense net',
    'ssl_global': 'SSL, raw global pool (the paper\'s rule)',
    'l1': 'L1-norm pruning (+TF)',
    'l1_long': 'L1-norm pruning (+TF), finetuned as many iterations as SSL trains',
    'aligned': 'Aligned / ASSL-style (+TF at kept channels)',
    'lite': 'BasicVSR-lite (from scratch)',
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group('teacher and data (default: the trained teacher of benchmarks/teacher.py and its data)')
    g.add_argument('--backbone', choices=['bi', 'uni', 'both'], default='bi',
                   help='bidirectional BasicVSR, BasicVSR-uni or both (default bi)')
    g.add_argument('--legacy-data', action='store_true',
                   help='the earlier small setting: train a teacher here on bikes 0-199, test on carphone 0-49')
    g.add_argument('--data-gt', help='GT root (REDS layout: <root>/<clip>/<%%08d>.png)')
    g.add_argument('--data-lq', help='LQ root, same layout')
    g.add_argument('--meta-info', help="BasicSR meta-info file of the training clips ('<clip> <frames> (h,w,c)')")
    g.add_argument('--test-clips', help=f'comma-separated test clips under the same roots (default {TEACHER_TEST}; '
                                        "REDS: BasicSR holds REDS4's 000,011,015,020 out of training)")
    g.add_argument('--test-frames', type=int, default=0,
                   help='use only the first N frames of each test clip (default 0: all)')
    g = p.add_argument_group('network and training')
    g.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS), help='runs to make (default all)')
    g.add_argument('--seeds', type=int, nargs='+', default=[0],
                   help=f'seeds of the {", ".join(SEEDED)} runs (mean and spread; default 0)')
    g.add_argument('--num-feat', type=int, help='BasicVSR num_feat (default: the teacher\'s; legacy 16)')
    g.add_argument('--num-block', type=int, help='residual blocks per branch (default: the teacher\'s; legacy 3)')
    g.add_argument('--lite-feat', type=int, help='BasicVSR-lite num_feat (default: num_feat x (1 - ratio))')
    g.add_argument('--budget', choices=['lite', 'ratio'], default='lite',
                   help="'lite' (default): every pruned network at the lite network's params w/o SPyNet "
                        "(ssl.target_params_ratio with budget_exclude [spynet]); 'ratio': one pruning ratio, --ratio")
    g.add_argument('--ratio', type=float, default=0.5,
                   help='lite width num_feat x (1 - ratio); with --budget ratio also the pruning ratio (default 0.5)')
    g.add_argument('--aligned-ratio', type=float,
                   help='with --budget ratio: pruning ratio of aligned (default --ratio; aligned also thins the '
                        'hidden state, so its params at one ratio are fewer)')
    g.add_argument('--scope', choices=['local', 'global_normalized', 'global'], default='global_normalized',
                   help="selection of every pruned run but ssl_global (default global_normalized, the shipped "
                        "default; ssl_global always uses the raw pool 'global')")
    g.add_argument('--batch', type=int, help='batch size (default: the teacher\'s; legacy 1)')
    g.add_argument('--num-frame', type=int, help='frames per training clip (default: the teacher\'s; legacy 5)')
    g.add_argument('--gt-size', type=int, help='GT crop (default: the teacher\'s; legacy 144)')
    g.add_argument('--lr', type=float, default=5e-4,
                   help='Adam learning rate of the pruning runs (default 5e-4: they start from a trained network)')
    g.add_argument('--lite-lr', type=float, help='learning rate of the lite run (default: the teacher\'s; legacy 2e-3)')
    g.add_argument('--dense-iters', type=int, help='iterations of the dense teacher (default: the trained '
                                                   "teacher's; legacy 600); the lite run trains this + finetune")
    g.add_argument('--pretrained', help='a dense net_g_*.pth to use as the teacher instead of the trained one')
    g.add_argument('--reg-delta', type=float, default=0.002, help='SIR: α increment Δ (default 0.002)')
    g.add_argument('--reg-interval', type=int, default=1, help='SIR: iterations between increments T1 (default 1)')
    g.add_argument('--reg-ceiling', type=float, default=0.1, help='SIR: α ceiling τ (default 0.1)')
    g.add_argument('--stabilize-iters', type=int, default=50,
                   help='SIR: iterations at the ceiling T2 (default 50; with the defaults above the sparsity '
                        'stage is 50 + 50 iterations)')
    g.add_argument('--gamma-lr-mul', type=float, default=1.0,
                   help='train.ssl_gamma_lr_mul of the pruning runs: the γ\'s lr = --lr x this (default 1; Adam moves '
                        'a γ by about lr per step, so a short sparsity stage needs more to drive γ towards 0)')
    g.add_argument('--finetune-iters', type=int, default=150, help='finetuning budget of every pruned network and '
                                                                   'extra budget of the lite one (default 150)')
    g.add_argument('--spynet-path', help='pretrained SPyNet weights (BasicSR network_g.spynet_path); default: none, '
                                         'SPyNet starts at zero flow')
    g.add_argument('--fix-flow', type=int, help='train SPyNet from this iteration of each run on (default: frozen)')
    g = p.add_argument_group('running')
    g.add_argument('--work-dir', default='experiments/quality_benchmark', help='runs, option files, logs '
                                                                               '(one sub-folder per backbone)')
    g.add_argument('--out', default='docs/results', help='where quality_<backbone>.json / .md / plots go')
    g.add_argument('--jobs', type=int, default=2, help='training runs at a time (default 2)')
    g.add_argument('--threads', type=int, default=1, help='CPU threads per run (default 1)')
    g.add_argument('--workers', type=int, default=0, help='data loader workers per run (default 0)')
    g.add_argument('--print-freq', type=int, default=10)
    g.add_argument('--keep-done', action='store_true',
                   help='do not retrain runs whose net_g_latest.pth exists in --work-dir (e.g. after an interruption)')
    g.add_argument('--eval-only', action='store_true', help='skip training: evaluate the finished runs in --work-dir')
    g.add_argument('--stop-after', type=float,
                   help='minutes of training per backbone after which unfinished runs are stopped and the finished '
                        'ones evaluated (default: no limit)')
    g.add_argument('--speed-repeats', type=int, default=3, help='timed forwards per network (median; default 3)')
    g.add_argument('--no-plots', action='store_true', help='do not make the scaling-factor / hidden-state plots')
    args = p.parse_args(argv)
    for name in ('ratio', 'aligned_ratio'):
        v = getattr(args, name)
        if v is not None and not 0 < v < 1:
            p.error(f'--{name.replace("_", "-")} must lie in (0, 1)')
    if bool(args.data_gt) != bool(args.data_lq) or (args.data_gt and not args.meta_info):
        p.error('--data-gt, --data-lq and --meta-info go together')
    if args.legacy_data and (args.data_gt or args.pretrained):
        p.error('--legacy-data trains its own teacher on its own data: no --data-gt / --pretrained with it')
    if args.aligned_ratio is not None and args.budget != 'ratio':
        p.error('--aligned-ratio is a pruning ratio: it goes with --budget ratio')
    if args.legacy_data and args.backbone != 'bi':
        p.error('--legacy-data exists for the bidirectional backbone only')
    if not args.gamma_lr_mul > 0:
        p.error('--gamma-lr-mul must be > 0')
    if len(set(args.seeds)) != len(args.seeds):
        p.error('--seeds must be distinct')
    for name in ('dense_iters', 'finetune_iters', 'jobs', 'threads', 'batch', 'num_frame', 'speed_repeats'):
        v = getattr(args, name)
        if v is not None and v < 1:
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


def base_options(args, name: str, gt: Path, lq: Path, meta: Path, num_feat: int, total: int, seed: int,
                 lr: float | None = None, eta_min: float = 1e-7) -> dict:
    """A plain BasicSR VideoRecurrentModel run (paths absolute, so the file works from any folder)."""
    return {
        'name': name, 'model_type': 'VideoRecurrentModel', 'scale': 4, 'num_gpu': 'auto',
        'manual_seed': seed,
        'datasets': {'train': {
            'name': 'train', 'type': 'REDSRecurrentDataset', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq),
            'meta_info_file': str(meta), 'val_partition': 'REDS4', 'test_mode': False,
            'io_backend': {'type': 'disk'}, 'num_frame': args.num_frame, 'gt_size': args.gt_size,
            'interval_list': [1], 'random_reverse': False, 'use_hflip': True, 'use_rot': True,
            'num_worker_per_gpu': args.workers, 'batch_size_per_gpu': args.batch, 'dataset_enlarge_ratio': 1000,
            'prefetch_mode': None}},
        'network_g': {'type': args.net_type, 'num_feat': num_feat, 'num_block': args.num_block,
                      'spynet_path': str(Path(args.spynet_path).resolve()) if args.spynet_path else None},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': args.lr if lr is None else lr, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total], 'restart_weights': [1],
                          'eta_min': eta_min},
            'total_iter': total, 'warmup_iter': -1,
            'fix_flow': args.fix_flow if args.fix_flow else total + 1, 'flow_lr_mul': 0.125,
            'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': args.print_freq, 'save_checkpoint_freq': total, 'use_tb_logger': True},
        'dist_params': {'backend': 'gloo', 'port': 29500},
        'find_unused_parameters': True,
    }


def budget(args, method: str) -> dict:
    """The ``ssl:`` keys that set how much is cut: the lite network's params w/o SPyNet, or one pruning ratio."""
    if args.budget == 'lite':
        return {'target_params_ratio': args.params_target, 'budget_exclude': ['spynet']}
    return {'pruning_ratio': args.aligned_ratio if method == 'aligned' and args.aligned_ratio else args.ratio}


def ssl_options(args, base: dict, name: str, teacher: Path, tf: bool = True, method: str = 'ssl',
                skip=(), tf_teacher: Path | None = None, scope: str | None = None, long: bool = False) -> dict:
    """SSLVideoRecurrentModel on top of ``base``: same data / network / optimizer, the ``ssl:`` section, TF
    (teacher: the network after the sparsity stage, or ``tf_teacher``, a dense checkpoint). ``long`` (L1 only):
    finetune for the sparsity stage's iterations as well, so the cut network trains as many iterations as SSL's."""
    stage = sparsity_iters(args)
    s = 0 if method == 'l1' else stage
    finetune = args.finetune_iters + (stage if long else 0)
    opt = copy.deepcopy(base)
    opt['name'] = name
    opt['model_type'] = 'SSLVideoRecurrentModel'
    opt['path']['pretrain_network_g'] = str(teacher)
    opt['ssl'] = {'method': method, **budget(args, method), 'scope': scope or args.scope, 'align': 1,
                  'skip': list(skip),
                  'reg': {'delta': args.reg_delta, 'interval': args.reg_interval, 'ceiling': args.reg_ceiling,
                          'stabilize_iter': args.stabilize_iters}}
    if tf_teacher is not None:
        opt['ssl']['tf_teacher'] = str(tf_teacher)
    t = opt['train']
    t['total_iter'] = s + finetune
    t['fix_flow'] = args.fix_flow if args.fix_flow else t['total_iter'] + 1
    t['scheduler']['periods'] = [finetune]
    t['scheduler_starts_at_finetune'] = True  # the paper: constant lr while sparsifying, a fresh cosine to finetune
    if args.gamma_lr_mul != 1:
        t['ssl_gamma_lr_mul'] = args.gamma_lr_mul
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


def run_all(runs: list[Run], work: Path, jobs: int, threads: int, done: dict | None = None,
            stop_after: float | None = None) -> dict:
    """Run the trainings, at most ``jobs`` at a time, each after the runs it depends on (``done``: finished
    before, name -> seconds; not rerun). After ``stop_after`` minutes the runs still going are stopped and the rest
    are not started (they are reported as not finished)."""
    done = dict(done or {})
    pending, active = [r for r in runs if r.name not in done], []
    t0 = time.time()
    while pending or active:
        if stop_after is not None and (time.time() - t0) / 60 >= stop_after:
            for run in active:
                run.proc.terminate()
                run.proc.wait()
                run.log.close()
            say(f'--stop-after {stop_after} min: stopped {[r.name for r in active]}, '
                f'not started {[r.name for r in pending]}')
            break
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


def speed(net, x, repeats: int) -> float:
    """Median seconds of ``repeats`` forwards of ``x`` (after one warm-up forward)."""
    import torch
    with torch.no_grad():
        net(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def evaluate(args, specs: list[dict], gt_root: Path, lq_root: Path, teacher: Path) -> dict:
    """Every finished run of ``specs`` (name, net options, checkpoint, checkpoint before finetuning) on every test
    clip: quality, params, MACs (counted on the smallest test clip, per frame) and CPU seconds per frame there."""
    import torch
    import torch.nn.functional as F
    from basicsr.archs import build_network

    from ssl_plugin.basicsr_plugin import load_pruned_network, register
    from ssl_plugin.core.algorithm import SSLConfig, SSLController
    register()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')

    def load(path, opt):
        return load_pruned_network(build_network(dict(opt)), str(path)).to(device).eval()

    def l1_before(spec):  # the l1 run's own selection (its ssl: section), cut at once: the network before finetuning
        net = load(teacher, spec['net'])
        SSLController(SSLConfig.from_dict(spec['ssl'])).start(net, keep_teacher=False)
        return net

    clips = [c for c in args.test_clips.split(',') if c]
    data = {c: (read_clip(lq_root, c, args.test_frames), read_clip(gt_root, c, args.test_frames)) for c in clips}
    small = min(data, key=lambda c: data[c][0].numel())
    rows = {}
    with torch.no_grad():
        per_clip = {}
        for c, (lq, gt) in data.items():
            up = F.interpolate(lq, scale_factor=gt.shape[-1] / lq.shape[-1], mode='bicubic', align_corners=False)
            per_clip[c] = quality(up.clamp(0, 1), gt)
        rows['bicubic'] = {'clips': per_clip, **{k: statistics.mean(v[k] for v in per_clip.values())
                                                 for k in next(iter(per_clip.values()))}}
        for spec in specs:
            if not Path(spec['ckpt']).is_file():
                say(f'not evaluated (no checkpoint): {spec["name"]}')
                continue
            say(f'evaluating {spec["name"]}')
            row = {'method': spec['method'], 'seed': spec['seed'], **spec.get('selection', {})}
            before = spec.get('before')
            makers = [('', lambda: load(spec['ckpt'], spec['net']))]
            if before == 'l1':
                makers.append(('before_ft_', lambda: l1_before(spec)))
            elif before is not None and Path(before).is_file():
                makers.append(('before_ft_', lambda: load(before, spec['net'])))
            for tag, make in makers:
                net = make()
                per_clip = {}
                for c, (lq, gt) in data.items():
                    x = lq.unsqueeze(0).to(device)
                    if c == small and not tag:  # MACs counted on the forward itself
                        (total, no_flow), sr = macs(net, x, keep_output=True)
                        frames = lq.shape[0]
                        row['seconds_per_frame'] = speed(net, x, args.speed_repeats) / frames
                    else:
                        sr = net(x)
                    per_clip[c] = quality(sr[0].cpu(), gt)
                row.update({tag + k: statistics.mean(v[k] for v in per_clip.values())
                            for k in next(iter(per_clip.values()))})
                if not tag:
                    row['clips'] = per_clip
                    params = sum(p.numel() for p in net.parameters())
                    flow_params = sum(p.numel() for p in net.spynet.parameters())
                    row.update(params=params, params_wo_spynet=params - flow_params,
                               macs_per_frame=total / frames, macs_per_frame_wo_spynet=no_flow / frames)
                del net
            rows[spec['name']] = row
    if 'before_ft_psnr_rgb' in rows.get('ssl', {}) and 'ssl_no_tf' in rows:  # resumed from the same pruned weights
        rows['ssl_no_tf'].update({k: v for k, v in rows['ssl'].items() if k.startswith('before_ft_')})
    return {'rows': rows, 'test_clips': {c: {'frames': int(lq.shape[0]), 'lq': list(lq.shape[-2:]),
                                             'gt': list(gt.shape[-2:])} for c, (lq, gt) in data.items()},
            'speed_clip': small, 'device': str(device)}


def summarize(rows: dict) -> dict:
    """Per method: mean and spread (max - min) over its seeds of every score; the cost of its first seed."""
    out = {}
    for name, r in rows.items():
        key = r.get('method', name)
        out.setdefault(key, []).append(r)
    summary = {}
    for key, rs in out.items():
        first = rs[0]
        s = dict(first)
        s['seeds'] = [r.get('seed') for r in rs]
        for k in ('psnr_rgb', 'ssim_rgb', 'psnr_y', 'ssim_y'):
            vals = [r[k] for r in rs]
            s[k] = statistics.mean(vals)
            s[k + '_spread'] = max(vals) - min(vals)
        summary[key] = s
    return summary


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
    rows, s = summarize(result['rows']), result['settings']
    clips = list(result['test_clips'])
    lines = [
        '| Method | Seeds | Pruning ratio | Params w/o SPyNet | GMACs/frame w/o SPyNet | CPU ms/frame | PSNR RGB '
        f'({" / ".join(clips)}) | PSNR RGB mean (spread) | SSIM RGB | PSNR Y | SSIM Y | PSNR RGB before finetuning |',
        '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    labels = dict(LABELS, dense=f'{s["net_type"]} (dense teacher)')
    for key, label in labels.items():
        r = rows.get(key)
        if r is None:
            continue
        if 'params' in r:
            cost = (f'{r["params_wo_spynet"] / 1e3:.1f} k | {r["macs_per_frame_wo_spynet"] / 1e9:.3f} | '
                    f'{r["seconds_per_frame"] * 1e3:.0f}')
        else:
            cost = '– | – | –'
        seeds = ', '.join(str(x) for x in r['seeds']) if r.get('seeds') and r['seeds'][0] is not None else '–'
        spread = f' (±{r["psnr_rgb_spread"] / 2:.2f})' if len(r.get('seeds') or []) > 1 else ''
        per_clip = ' / '.join(f'{r["clips"][c]["psnr_rgb"]:.2f}' for c in clips) if 'clips' in r else '–'
        before = f'{r["before_ft_psnr_rgb"]:.2f}' if 'before_ft_psnr_rgb' in r else '–'
        if key == 'lite':
            label = f'{label}, num_feat {s["lite_feat"]}'
        ratio = f'{r["pruning_ratio"]:.3g}' if r.get('pruning_ratio') else '–'
        lines.append(f'| {label} | {seeds} | {ratio} | {cost} | {per_clip} | {r["psnr_rgb"]:.2f}{spread} | '
                     f'{r["ssim_rgb"]:.4f} | {r["psnr_y"]:.2f} | {r["ssim_y"]:.4f} | {before} |')
    shown_clips = ', '.join(f'{c} ({v["frames"]} frames, LR {v["lq"][1]}x{v["lq"][0]})'
                            for c, v in result['test_clips'].items())
    missing = [n for n in result.get('planned', []) if n not in result['rows']]
    if s.get('budget', 'ratio') == 'lite':
        cut = (f'every pruned network at the lite network\'s params w/o SPyNet (target_params_ratio '
               f'{s["params_target"]:.3f}, budget_exclude [spynet]; selection {s["scope"]}, ssl_global: global)')
    else:
        cut = f'pruning ratio {s["ratio"]} (aligned {s["aligned_ratio"] or s["ratio"]}, {s["scope"]})'
    mul = s.get('gamma_lr_mul', 1)
    gamma = f', γ lr x {mul:g}' if mul != 1 else ''
    long = f'l1_long {s["finetune_iters"] + s["sparsity_iters"]}; ' if 'l1_long' in rows else ''
    lines += ['', f'{s["net_type"]} num_feat {s["num_feat"]}, num_block {s["num_block"]}, BI x4; {cut}; teacher '
                  f'{s["dense_iters"]} iterations; sparsity stage {s["sparsity_iters"]}, finetuning '
                  f'{s["finetune_iters"]} ({long}lr {s["lr"]}{gamma}), lite {s["lite_iters"]} from scratch '
                  f'(lr {s["lite_lr"]}); '
                  f'batch {s["batch"]} x {s["num_frame"]} frames, GT crop {s["gt_size"]}. Spread: ± half the range '
                  f'over the seeds. Test clips: {shown_clips}; MACs and CPU time (median of {s["speed_repeats"]}, '
                  f'{s.get("eval_threads", s["jobs"] * s["threads"])} thread(s), a shared machine) on '
                  f'{result["speed_clip"]}. Machine: '
                  f'{result["machine"]}; total {result["minutes"]:.0f} min.']
    if missing:
        lines += ['', f'Not finished in this run: {", ".join(missing)}.']
    for method, why in result.get('left_out', {}).items():
        lines += ['', f'Left out: {method} ({why}).']
    return '\n'.join(lines) + '\n'


def make_plots(work: Path, out: Path, prune_at: int, lq_root: Path, test_clip: str, frames: int | None) -> list[str]:
    """The supplementary figures from the ``ssl`` runs: γ of pruned / kept units in the sparsity stage; hidden states
    of the pruned network before finetuning and after finetuning with / without TF against the unpruned teacher.
    Returns the equivalent command lines (paths relative to the current folder)."""
    from ssl_plugin.tools import plot_hidden_states, plot_scaling_factors

    exp = work / 'experiments'
    sf = [str(exp / 'ssl'), '--out', str(out / 'scaling_factors')]
    ckpts = [str(exp / 'ssl' / 'models' / 'net_g_latest.pth')]
    labels = ['pruned, before finetuning', 'finetuned with TF']
    if (exp / 'ssl_no_tf' / 'models' / 'net_g_latest.pth').is_file():
        ckpts.append(str(exp / 'ssl_no_tf' / 'models' / 'net_g_latest.pth'))
        labels.append('finetuned without TF')
    hs = ['--opt', str(work / 'options' / 'ssl.yml'),
          '--ckpt', str(exp / 'ssl' / 'models' / f'net_g_{prune_at}.pth'), *ckpts,
          '--labels', *labels,
          '--teacher', str(exp / 'ssl' / 'training_states' / f'{prune_at}.state'),
          '--lq', str(lq_root / test_clip), '--out', str(out / 'hidden_states')]
    if frames:
        hs += ['--frames', str(frames)]
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
LEGACY = {'num_feat': 16, 'num_block': 3, 'batch': 1, 'num_frame': 5, 'gt_size': 144, 'lite_lr': 2e-3,
          'dense_iters': 600, 'test_clips': '000', 'test_frames': 50, 'lr': 2e-3, 'stabilize_iters': 150,
          'finetune_iters': 300}


def resolve(args, backbone: str, work: Path):
    """Per backbone: the settings (``args`` with every default filled in), data roots, meta info, the dense teacher
    (None: train it here, legacy) and the teacher's metadata."""
    a = copy.copy(args)
    a.backbone = backbone
    if args.legacy_data:
        for k, v in LEGACY.items():
            if getattr(a, k) is None or (k in ('lr', 'stabilize_iters', 'finetune_iters', 'test_frames')
                                         and getattr(a, k) == PARSER_DEFAULTS[k]):
                setattr(a, k, v)
        a.net_type, a.eta_min = 'BasicVSR', 1e-7
        gt, lq, meta = build_data(work)
        return a, gt, lq, meta, None, {}
    import teacher as fixture  # benchmarks/teacher.py, the trained-teacher fixture

    a.net_type = fixture.ARCHS[backbone]
    tmeta = {}
    if args.pretrained:
        ckpt = Path(args.pretrained).resolve()
        ts = dict(fixture.DEFAULTS)
    else:
        ckpt, tmeta = fixture.teacher(backbone, threads=args.threads)
        ts = tmeta['settings']
    for k in ('num_feat', 'num_block', 'batch', 'num_frame', 'gt_size'):
        if getattr(a, k) is None:
            setattr(a, k, ts[k])
    a.lite_lr = a.lite_lr or ts['lr']
    a.eta_min = ts['eta_min']
    a.dense_iters = a.dense_iters or tmeta.get('iterations') or ts['max_iters']
    a.test_clips = a.test_clips or TEACHER_TEST
    if args.data_gt:
        gt, lq, meta = Path(args.data_gt).resolve(), Path(args.data_lq).resolve(), Path(args.meta_info).resolve()
    else:
        data = fixture.build_data(fixture.default_cache())
        gt, lq = data / 'GT', data / f'BIx{fixture.SCALE}'
        meta = fixture.write_train_meta(data, work / 'meta_info_train.txt', a.num_frame)
    return a, gt, lq, meta, Path(ckpt), tmeta


def resolve_selection(opt: dict, net_opt: dict, teacher: Path) -> dict:
    """The run's selection on the teacher, made by the engine call the run makes at its start (an unreachable budget
    raises here, before any training): the chosen pruning ratio and the params ratio it meets."""
    from basicsr.archs import build_network

    from ssl_plugin.basicsr_plugin import load_pruned_network
    from ssl_plugin.core.algorithm import SSLConfig, SSLController

    net = load_pruned_network(build_network(dict(net_opt)), str(teacher))
    ctrl = SSLController(SSLConfig.from_dict(opt['ssl']))
    ctrl.start(net, keep_teacher=False)
    rep = ctrl.report
    return {'pruning_ratio': ctrl.ratio,
            'selected_param_ratio': rep.get('budget', {}).get('param_ratio', rep['param_ratio'])}


def settle(a) -> None:
    """The lite network (width, budget) and the params target it sets for the pruned ones."""
    a.lite_feat = a.lite_feat or max(1, round(a.num_feat * (1 - a.ratio)))
    a.lite_iters = a.dense_iters + a.finetune_iters
    net_opt = {'type': a.net_type, 'num_feat': a.num_feat, 'num_block': a.num_block}
    a.params_target = params_without_spynet(net_opt) / params_without_spynet(dict(net_opt, num_feat=a.lite_feat))
    a.left_out = {}


def params_without_spynet(net_opt: dict) -> int:
    from basicsr.archs import build_network
    net = build_network(dict(net_opt))
    return sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in net.spynet.parameters())


def plan(a, work: Path, gt: Path, lq: Path, meta: Path, teacher: Path | None) -> tuple[list, list]:
    """The runs (in start order: the longest first) and the evaluation specs of one backbone."""
    exp, opts = work / 'experiments', work / 'options'
    prune_at = sparsity_iters(a)
    net = {'type': a.net_type, 'num_feat': a.num_feat, 'num_block': a.num_block}
    runs, specs = [], []
    seed0 = a.seeds[0]
    needs = ()
    if teacher is None:  # legacy: train the dense teacher here
        dense = base_options(a, 'dense', gt, lq, meta, a.num_feat, a.dense_iters, seed0, lr=a.lite_lr)
        dense['path']['pretrain_network_g'] = str(zero_flow_init(dense['network_g'], work / 'init_dense.pth', seed0))
        runs.append(Run('dense', write_yaml(dense, opts / 'dense.yml')))
        teacher, needs = exp / 'dense' / 'models' / 'net_g_latest.pth', ('dense',)
    specs.append({'name': 'dense', 'method': 'dense', 'seed': None, 'net': net, 'ckpt': teacher})
    base = {seed: base_options(a, 'base', gt, lq, meta, a.num_feat, 1, seed) for seed in a.seeds}

    def latest(name):
        return exp / name / 'models' / 'net_g_latest.pth'

    if 'lite' in a.methods:
        lite = base_options(a, 'lite', gt, lq, meta, a.lite_feat, a.lite_iters, seed0, lr=a.lite_lr,
                            eta_min=a.eta_min)
        lite['path']['pretrain_network_g'] = str(zero_flow_init(lite['network_g'], work / 'init_lite.pth', seed0))
        runs.append(Run('lite', write_yaml(lite, opts / 'lite.yml')))
        specs.append({'name': 'lite', 'method': 'lite', 'seed': seed0, 'net': dict(net, num_feat=a.lite_feat),
                      'ckpt': latest('lite')})
    extra = []
    for seed in a.seeds:
        for method, kwargs in (('ssl', {}), ('aligned', {'method': 'aligned'}), ('l1', {'method': 'l1'}),
                               ('l1_long', {'method': 'l1', 'long': True}), ('ssl_no_tf', {'tf': False}),
                               ('ssl_tf_dense', {'tf_teacher': teacher}),
                               ('ssl_keep_conv2', {'skip': ['*.conv2']}), ('ssl_global', {'scope': 'global'})):
            if method not in a.methods or (seed != seed0 and method not in SEEDED) or method in a.left_out:
                continue
            name = method if seed == seed0 else f'{method}_s{seed}'
            opt = ssl_options(a, base[seed], name, teacher, **kwargs)
            selection = {}
            if needs == () and seed == seed0:  # the teacher exists: resolve the selection as the run will
                try:
                    selection = resolve_selection(opt, net, teacher)
                except ValueError as e:
                    a.left_out[method] = str(e)
                    say(f'left out {method}: {e}')
                    continue
            one_shot = opt['ssl']['method'] == 'l1'  # l1 and l1_long: cut at iteration 0, no sparsity stage
            run = Run(name, write_yaml(opt, opts / f'{name}.yml'), deps=needs)
            before = 'l1' if one_shot else exp / name / 'models' / f'net_g_{prune_at}.pth'
            if method == 'ssl_no_tf':  # resumes the ssl run at the pruning iteration: the same pruned weights
                if 'ssl' not in a.methods:
                    raise SystemExit('ssl_no_tf resumes the ssl run: add ssl to --methods')
                opt['path']['resume_state'] = str(exp / name / 'training_states' / f'{prune_at}.state')
                write_yaml(opt, run.yml)
                run.deps, before = {'ssl'}, None
                run.prepare = lambda n=name: copy_for_resume(exp / 'ssl', exp / n, prune_at)
            (runs if seed == seed0 else extra).append(run)
            specs.append({'name': name, 'method': method, 'seed': seed, 'net': net, 'ckpt': latest(name),
                          'before': before if seed == seed0 else None, 'ssl': opt['ssl'],
                          'selection': selection})
    late = [r for r in runs if r.name in ('ssl_tf_dense', 'ssl_keep_conv2', 'ssl_global')]  # after the main gap's seeds
    return [r for r in runs if r not in late] + extra + late, specs


def run_backbone(args, backbone: str, argv) -> dict:
    t0 = time.time()
    work = Path(args.work_dir).resolve() / ('legacy' if args.legacy_data else backbone)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve()
    a, gt, lq, meta, teacher, tmeta = resolve(args, backbone, work)
    settle(a)
    prune_at = sparsity_iters(a)
    say(f'{backbone}: {a.net_type} {a.num_feat}/{a.num_block}; sparsity stage {prune_at} iterations, finetuning '
        f'{a.finetune_iters}; lite num_feat {a.lite_feat}, {a.lite_iters} iterations')
    runs, specs = plan(a, work, gt, lq, meta, teacher)
    exp = work / 'experiments'
    seconds = {}
    if not args.eval_only:
        done = {r.name: 0.0 for r in runs
                if args.keep_done and (exp / r.name / 'models' / 'net_g_latest.pth').is_file()}
        for run in runs:  # a rerun starts clean (BasicSR would rename the old folders to *_archived_<time>)
            if run.name not in done:
                for folder in (exp / run.name, work / 'tb_logger' / run.name):
                    shutil.rmtree(folder, ignore_errors=True)
        seconds = run_all(runs, work, args.jobs, args.threads, done, args.stop_after)
    import torch
    torch.set_num_threads(args.jobs * args.threads)  # the training slots are free now
    say(f'{backbone}: evaluating on {a.test_clips}')
    result = evaluate(a, specs, gt, lq, teacher or exp / 'dense' / 'models' / 'net_g_latest.pth')
    settings = {k: v for k, v in vars(a).items() if k not in ('eval_only', 'no_plots', 'keep_done', 'left_out')}
    result.update(
        settings={**settings, 'sparsity_iters': prune_at}, planned=[r.name for r in runs], left_out=a.left_out,
        teacher={'checkpoint': 'trained-teacher fixture' if tmeta else str(teacher), 'test': tmeta.get('test'),
                 'best_iter': tmeta.get('best_iter'), 'iterations': tmeta.get('iterations')},
        run_seconds=seconds, machine=machine(), minutes=(time.time() - t0) / 60, code=code_version(),
        command='python benchmarks/quality.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
        option_files={r.name: str(r.yml.relative_to(work)) for r in runs})
    stem = 'quality' if args.legacy_data else f'quality_{backbone}'
    if not args.no_plots and (exp / 'ssl' / 'models' / 'net_g_latest.pth').is_file():
        plots = out if args.legacy_data else out / stem
        result['plot_commands'] = make_plots(work, plots, prune_at, lq, a.test_clips.split(',')[-1], a.test_frames)
        if tmeta:  # the fixture's cache folder is machine-specific: named as teacher.json names it
            import teacher as fixture
            cache = str(Path(fixture.default_cache()).resolve())
            result['plot_commands'] = [c.replace(cache, '<cache>') for c in result['plot_commands']]
    write_atomic(out / f'{stem}.json', json.dumps(result, indent=2, default=str) + '\n')
    write_atomic(out / f'{stem}.md', markdown(result))
    print(markdown(result))
    say(f'wrote {out / stem}.md and {out / stem}.json')
    return result


PARSER_DEFAULTS = {k: v for k, v in vars(parse_args([])).items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from ssl_plugin.basicsr_plugin import register
    register()
    backbones = ['bi', 'uni'] if args.backbone == 'both' else [args.backbone]
    return {b: run_backbone(args, b, argv) for b in backbones}


if __name__ == '__main__':
    main()
