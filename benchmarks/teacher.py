"""Trained-teacher fixture: a dense BasicVSR (BasicSR's ``BasicVSR``) or BasicVSR-uni (``BasicVSRUni``) trained on the
bundled real clips, cached so every benchmark that needs a trained network reuses the same one.

Why: a network trained for a few hundred iterations is barely above bicubic and still carries its initialisation
(BasicSR scales residual blocks x0.1), so pruning studies on it measure the initialisation, not a trained network.

Data: only ``bikes`` and ``carphone`` (the other clips of the wheel are held back for independent checks), BI x4
(``ssl_plugin.tools.make_dataset``). Each clip's frames are split into disjoint segments (source frames, half-open),
with a gap between segments so that near-identical neighbouring frames do not straddle a boundary:

    bikes     train 0-159 (two 80-frame clips)   val 180-199   test 210-249
    carphone  train 0-59                          val 65-84     test 90-119

Training goes through BasicSR's own pipeline (``ssl_plugin/train.py`` on an option file written into the cache
entry's ``work/`` folder; model ``VideoRecurrentModel``, Charbonnier loss, Adam, cosine schedule over ``max_iters``).
BasicSR's ``VideoRecurrentModel`` cannot validate on CPU, so BasicSR saves ``net_g`` every ``eval_every`` iterations
and this script validates each saved network itself (PSNR RGB on the two validation segments, mean of the clip means;
on the central 80 LR columns of each frame, to keep validation cheap).

Stopping criterion: stop after ``patience`` evaluations in a row without a gain of at least ``min_gain`` dB over the
best validation PSNR so far, or at ``max_iters``, or when ``max_minutes`` of wall time have passed; the best
checkpoint is kept. SPyNet: no pretrained weights can be downloaded, so it starts at zero flow (last conv of every
level zeroed) and stays frozen (``fix_flow`` beyond the last iteration), as in ``benchmarks/quality.py``.

Cache: ``--cache DIR``, else ``$SSL_PLUGIN_CACHE``, else ``<repo>/data/teachers``. An entry is keyed by a hash of the
settings and of the code (the source of this file, of the arch files it trains and of the dataset tool), not by the
git commit; a second run with the same key returns the cached checkpoint at once.

    python benchmarks/teacher.py --arch both          # trains (or reuses) both teachers, prints their PSNR
    python -c "from benchmarks.teacher import teacher_checkpoint; print(teacher_checkpoint('bi'))"
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ssl_plugin  # noqa: E402,F401  (host compatibility shims before basicsr)

TRAIN = REPO / 'ssl_plugin' / 'train.py'
CACHE_ENV = 'SSL_PLUGIN_CACHE'
ARCHS = {'bi': 'BasicVSR', 'uni': 'BasicVSRUni'}
#: The clips the teacher may use, and their segments (source frames, [start, end)).
SEGMENTS = {
    'bikes': {'train': (0, 160), 'val': (180, 200), 'test': (210, 250)},
    'carphone': {'train': (0, 60), 'val': (65, 85), 'test': (90, 120)},
}
#: BasicSR's REDSRecurrentDataset draws clip starts in 0..100-num_frame: a training clip must not exceed 100 frames.
MAX_TRAIN_CLIP = 100
SCALE = 4
#: Smallest LR side of each clip's frames (carphone 176x144, bikes 640x272), and the LR size BasicSR's SpyNet needs to
#: exceed (it pads to multiples of 32 and pools five times).
CLIP_LR_SIZE = {'bikes': 272 // SCALE, 'carphone': 144 // SCALE}
SPYNET_MIN_LR = 32
#: Validation runs on the central VAL_LR_WIDTH LR columns of each frame: a full 640-px bikes frame costs as much as
#: ~30 training crops, and validation must stay a small fraction of the training time on a CPU.
VAL_LR_WIDTH = 80
#: Defaults of every setting that changes the trained network (all of them enter the cache key).
DEFAULTS = {
    'num_feat': 32, 'num_block': 5, 'num_frame': 5, 'gt_size': 144, 'batch': 1, 'lr': 2e-3, 'eta_min': 1e-6,
    'max_iters': 800, 'eval_every': 100, 'patience': 3, 'min_gain': 0.02, 'max_minutes': 62.0, 'seed': 0,
    'fix_flow': None,
}


def say(msg: str) -> None:
    print(f'[teacher {time.strftime("%H:%M:%S")}] {msg}', flush=True)


# ------------------------------------------------------------------------------------------------------- segments
def check_segments(segments: dict, lengths: dict) -> None:
    """Every clip has train / val / test segments inside the video that do not overlap; else ValueError."""
    for clip, segs in segments.items():
        if set(segs) != {'train', 'val', 'test'}:
            raise ValueError(f'{clip}: segments must be exactly train, val, test; got {sorted(segs)}')
        if clip not in lengths:
            raise ValueError(f'{clip}: unknown clip; known: {sorted(lengths)}')
        for split, (a, b) in segs.items():
            if not 0 <= a < b <= lengths[clip]:
                raise ValueError(f'{clip} {split} [{a}, {b}) is not a non-empty range inside 0..{lengths[clip]}')
        spans = sorted(segs.items(), key=lambda kv: kv[1])
        for (s1, (_, b1)), (s2, (a2, _)) in zip(spans, spans[1:]):
            if a2 < b1:
                raise ValueError(f'{clip}: {s1} {segs[s1]} and {s2} {segs[s2]} overlap')


def train_chunks(start: int, end: int, max_len: int = MAX_TRAIN_CLIP) -> list[tuple[int, int]]:
    """[start, end) cut into the fewest clips of at most ``max_len`` frames, of (nearly) equal length."""
    n = end - start
    if n <= 0:
        raise ValueError(f'empty training segment [{start}, {end})')
    parts = -(-n // max_len)
    bounds = [start + round(i * n / parts) for i in range(parts + 1)]
    return list(zip(bounds, bounds[1:]))


def clip_names(segments: dict = SEGMENTS) -> dict:
    """Frame-folder name -> (clip, split, start, end) for every segment (training segments in chunks)."""
    names = {}
    for clip, segs in segments.items():
        for i, (a, b) in enumerate(train_chunks(*segs['train'])):
            names[f'{clip}_train{i}'] = (clip, 'train', a, b)
        for split in ('val', 'test'):
            names[f'{clip}_{split}'] = (clip, split, *segs[split])
    return names


# ------------------------------------------------------------------------------------------------------- keys
def source_files(arch: str) -> list[Path]:
    """The code a teacher depends on: this file, the dataset tool, the arch it trains (and BasicSR's SpyNet)."""
    import basicsr.archs.basicvsr_arch as bi_arch
    import basicsr.archs.spynet_arch as spynet_arch

    import ssl_plugin.archs.basicvsr_uni_arch as uni_arch
    import ssl_plugin.tools.make_dataset as make_dataset
    if arch not in ARCHS:
        raise ValueError(f'arch must be one of {sorted(ARCHS)}, got {arch!r}')
    arch_file = bi_arch.__file__ if arch == 'bi' else uni_arch.__file__
    return [Path(__file__).resolve(), Path(make_dataset.__file__), Path(arch_file), Path(spynet_arch.__file__)]


def code_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b'\0' + f.read_bytes() + b'\0')
    return digest.hexdigest()


def resolve_settings(**settings) -> dict:
    """DEFAULTS updated by ``settings``; an unknown name or a bad value is an error."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f'unknown teacher setting(s) {unknown}; known: {sorted(DEFAULTS)}')
    s = {**DEFAULTS, **settings}
    for k in ('num_feat', 'num_block', 'num_frame', 'gt_size', 'batch', 'max_iters', 'eval_every', 'patience'):
        if not isinstance(s[k], int) or s[k] < 1:
            raise ValueError(f'teacher setting {k} must be a positive integer, got {s[k]!r}')
    if s['gt_size'] % SCALE:
        raise ValueError(f'gt_size must be divisible by the scale {SCALE}, got {s["gt_size"]}')
    lr_crop, smallest = s['gt_size'] // SCALE, min(CLIP_LR_SIZE.values())
    if not SPYNET_MIN_LR < lr_crop <= smallest:
        raise ValueError(f'gt_size {s["gt_size"]} gives {lr_crop}-px LR crops; they must be larger than '
                         f'{SPYNET_MIN_LR} (BasicSR\'s SpyNet fails on inputs of 32 px or less) and fit the smallest '
                         f'LR frame side ({smallest} px): gt_size {SCALE * (SPYNET_MIN_LR + 1)}..{SCALE * smallest}')
    if not s['lr'] > 0 or s['max_minutes'] <= 0 or s['min_gain'] < 0:
        raise ValueError('lr and max_minutes must be > 0 and min_gain >= 0')
    if s['fix_flow'] is not None and (not isinstance(s['fix_flow'], int) or s['fix_flow'] < 1):
        raise ValueError(f'fix_flow must be None (SPyNet frozen) or an iteration >= 1, got {s["fix_flow"]!r}')
    shortest = min(b - a for segs in SEGMENTS.values() for a, b in train_chunks(*segs['train']))
    if s['num_frame'] > shortest:
        raise ValueError(f'num_frame {s["num_frame"]} exceeds the shortest training clip ({shortest} frames)')
    return s


def teacher_key(arch: str, settings: dict, files: list[Path] | None = None) -> str:
    """Hash of the arch, the resolved settings, the segments and the code the teacher depends on."""
    payload = json.dumps({'arch': arch, 'settings': resolve_settings(**settings), 'segments': SEGMENTS,
                          'code': code_hash(source_files(arch) if files is None else files)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO / 'data' / 'teachers'


def entry_dir(cache: Path, arch: str, key: str) -> Path:
    return Path(cache) / f'{arch}-{key}'


def cached(entry: Path) -> dict | None:
    """The metadata of a complete cache entry, or None."""
    meta = entry / 'teacher.json'
    if not (meta.is_file() and (entry / 'net_g.pth').is_file()):
        return None
    data = json.loads(meta.read_text())
    return data if data.get('complete') else None


# ------------------------------------------------------------------------------------------------------- data
def build_data(cache: Path) -> Path:
    """The frame folders of every segment (GT and BIx4), built once under ``cache/data-<hash>``."""
    from ssl_plugin.tools import make_dataset
    from ssl_plugin.tools.clips import fetch_clips

    names = clip_names()
    tag = hashlib.sha256(json.dumps(names, sort_keys=True).encode()
                         + Path(make_dataset.__file__).read_bytes()).hexdigest()[:12]
    out = Path(cache) / f'data-{tag}'
    if (out / 'complete').is_file():
        return out
    paths = fetch_clips(names=sorted(SEGMENTS))
    from ssl_plugin.tools.clips import CLIPS
    check_segments(SEGMENTS, {c: CLIPS[c].frames for c in SEGMENTS})
    Path(cache).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.data-', dir=cache))
    try:
        for i, (name, (clip, split, a, b)) in enumerate(names.items()):
            say(f'dataset: {clip} frames {a}..{b - 1} -> {name} ({split})')
            make_dataset.build_dataset(paths[clip], tmp / 'set', degradations=['BI'], scale=SCALE, start=a, end=b,
                                       names=[name], overwrite=i == 0, append=i > 0)
        (tmp / 'set' / 'complete').write_text('')
        try:
            os.replace(tmp / 'set', out)
        except OSError:  # another process finished the same folder first
            if not (out / 'complete').is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_train_meta(data: Path, path: Path, num_frame: int) -> Path:
    """BasicSR meta info of the training clips. REDSRecurrentDataset makes one sample per listed frame and reads
    ``num_frame`` frames from it, so a clip of n frames is listed with its n - num_frame + 1 valid starts."""
    record = json.loads((data / 'dataset.json').read_text())
    lines = []
    for name, (_, split, a, b) in clip_names().items():
        if split != 'train':
            continue
        h, w, c = record['clips'][name]['gt_shape']
        lines.append(f'{name} {b - a - num_frame + 1} ({h},{w},{c})\n')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(lines))
    return path


# ------------------------------------------------------------------------------------------------------- options
def network_options(arch: str, s: dict) -> dict:
    return {'type': ARCHS[arch], 'num_feat': s['num_feat'], 'num_block': s['num_block'], 'spynet_path': None}


def train_options(arch: str, s: dict, data: Path, meta: Path, init: Path) -> dict:
    """A plain BasicSR VideoRecurrentModel run that saves net_g every ``eval_every`` iterations and never validates."""
    total = s['max_iters']
    return {
        'name': 'teacher', 'model_type': 'VideoRecurrentModel', 'scale': SCALE, 'num_gpu': 'auto',
        'manual_seed': s['seed'],
        'datasets': {'train': {
            'name': 'train', 'type': 'REDSRecurrentDataset', 'dataroot_gt': str(data / 'GT'),
            'dataroot_lq': str(data / f'BIx{SCALE}'), 'meta_info_file': str(meta), 'val_partition': 'REDS4',
            'test_mode': False, 'io_backend': {'type': 'disk'}, 'num_frame': s['num_frame'],
            'gt_size': s['gt_size'], 'interval_list': [1], 'random_reverse': False, 'use_hflip': True,
            'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': s['batch'],
            'dataset_enlarge_ratio': 1000, 'prefetch_mode': None}},
        'network_g': network_options(arch, s),
        'path': {'pretrain_network_g': str(init), 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': s['lr'], 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total], 'restart_weights': [1],
                          'eta_min': s['eta_min']},
            'total_iter': total, 'warmup_iter': -1,
            'fix_flow': s['fix_flow'] if s['fix_flow'] else total + 1, 'flow_lr_mul': 0.125,
            'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': s['eval_every'], 'save_checkpoint_freq': s['eval_every'], 'use_tb_logger': False},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }


def build_net(arch: str, s: dict):
    from basicsr.archs import build_network

    import ssl_plugin.archs  # noqa: F401  (registers BasicVSRUni)
    return build_network(network_options(arch, s))


def zero_flow_init(arch: str, s: dict, path: Path) -> Path:
    """A seeded fresh network whose SPyNet outputs zero flow (identity warping), the neutral start without
    pretrained flow weights."""
    import torch

    from ssl_plugin.core.io import atomic_save
    torch.manual_seed(s['seed'])
    net = build_net(arch, s)
    with torch.no_grad():
        for level in net.spynet.basic_module:
            last = [m for m in level.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            last.weight.zero_()
            last.bias.zero_()
    atomic_save({'params': net.state_dict()}, path)
    return path


# ------------------------------------------------------------------------------------------------------- evaluation
def load_net(arch: str, s: dict, path: Path):
    import torch
    net = build_net(arch, s)
    state = torch.load(path, map_location='cpu', weights_only=True)
    net.load_state_dict(state['params'], strict=True)
    return net.eval()


def read_segment(data: Path, name: str):
    """(LQ, GT) of one segment as (n, 3, h, w) float tensors in [0, 1] (BasicSR's reader, RGB)."""
    from basicsr.data.data_util import read_img_seq
    out = []
    for sub in (f'BIx{SCALE}', 'GT'):
        paths = sorted(str(p) for p in (data / sub / name).glob('*.png'))
        if not paths:
            raise FileNotFoundError(f'no frames in {data / sub / name}')
        out.append(read_img_seq(paths))
    return tuple(out)


def psnr(out, gt) -> dict:
    """Mean over frames of BasicSR's PSNR on RGB and on Y (uint8 images, no border crop)."""
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img
    rgb, y = [], []
    for i in range(gt.shape[0]):
        img, ref = tensor2img([out[i]]), tensor2img([gt[i]])
        rgb.append(calculate_psnr(img, ref, crop_border=0, test_y_channel=False))
        y.append(calculate_psnr(img, ref, crop_border=0, test_y_channel=True))
    return {'psnr_rgb': statistics.mean(rgb), 'psnr_y': statistics.mean(y)}


def bicubic(lq, gt):
    import torch.nn.functional as F
    return F.interpolate(lq, size=gt.shape[-2:], mode='bicubic', align_corners=False).clamp(0, 1)


def val_crop(lq, gt, width: int = VAL_LR_WIDTH):
    """The central ``width`` LR columns of (n, c, h, w) ``lq`` and the matching GT columns."""
    w = lq.shape[-1]
    if w <= width:
        return lq, gt
    a = (w - width) // 2
    s = gt.shape[-1] // w
    return lq[..., a:a + width], gt[..., a * s:(a + width) * s]


def evaluate(net, data: Path, split: str) -> dict:
    """Per clip: PSNR of ``net`` (None: bicubic) on the clip's ``split`` segment, run as one sequence (validation:
    on the central ``VAL_LR_WIDTH`` LR columns; test: whole frames)."""
    import torch
    scores = {}
    with torch.no_grad():
        for clip in SEGMENTS:
            lq, gt = read_segment(data, f'{clip}_{split}')
            if split == 'val':
                lq, gt = val_crop(lq, gt)
            sr = bicubic(lq, gt) if net is None else net(lq.unsqueeze(0))[0]
            scores[clip] = psnr(sr, gt)
    return scores


def mean_rgb(scores: dict) -> float:
    return statistics.mean(v['psnr_rgb'] for v in scores.values())


# ------------------------------------------------------------------------------------------------------- training
class Stopper:
    """Early stopping on validation PSNR: a new best needs a gain of at least ``min_gain`` dB; stop after
    ``patience`` evaluations in a row without one."""

    def __init__(self, patience: int, min_gain: float):
        self.patience, self.min_gain = patience, min_gain
        self.best, self.best_iter, self.bad = float('-inf'), None, 0

    def update(self, it: int, value: float) -> bool:
        """Record one evaluation; True when it is the new best."""
        if value >= self.best + self.min_gain:
            self.best, self.best_iter, self.bad = value, it, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad >= self.patience


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(lock: Path) -> bool:
    """Take ``lock`` (a file holding the owner's pid); False while a live process holds it. A stale lock is taken."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(str(os.getpid()))
        return True
    return False


def train(arch: str, s: dict, entry: Path, cache: Path, threads: int = 1) -> dict:
    """Train one teacher into ``entry`` (see the module docstring); returns its metadata."""
    import torch
    import yaml

    from ssl_plugin.core.io import atomic_save, atomic_write_text
    torch.set_num_threads(threads)
    t0 = time.time()
    data = build_data(cache)
    work = entry / 'work'
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    meta = write_train_meta(data, work / 'meta_info_train.txt', s['num_frame'])
    init = zero_flow_init(arch, s, work / 'init.pth')
    opt = train_options(arch, s, data, meta, init)
    yml = work / 'options' / 'teacher.yml'
    yml.parent.mkdir()
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    models = work / 'experiments' / 'teacher' / 'models'
    states = work / 'experiments' / 'teacher' / 'training_states'

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS='ignore')
    log = open(work / 'train.log', 'w')
    cmd = [sys.executable, str(TRAIN), '-opt', str(yml)]
    say(f'{arch}: training ({" ".join(cmd[1:])}), log {work / "train.log"}')
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    if threading.current_thread() is threading.main_thread():  # a `kill` of this script also stops the training
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    stopper = Stopper(s['patience'], s['min_gain'])
    history, reason, it = [], None, 0
    best = entry / 'net_g.pth'
    try:
        while reason is None:
            nxt = models / f'net_g_{it + s["eval_every"]}.pth'
            if nxt.is_file():
                it += s['eval_every']
                net = load_net(arch, s, nxt)
                val = evaluate(net, data, 'val')
                del net
                value = mean_rgb(val)
                gain = stopper.update(it, value)
                history.append({'iter': it, 'val_psnr_rgb': value, 'minutes': (time.time() - t0) / 60})
                say(f'{arch}: iter {it}: val PSNR {value:.3f} dB (best {stopper.best:.3f} at {stopper.best_iter})')
                if gain:
                    shutil.copyfile(nxt, best.with_suffix('.tmp'))
                    os.replace(best.with_suffix('.tmp'), best)
                nxt.unlink()
                for f in states.glob('*.state'):
                    f.unlink()
                if stopper.stop:
                    reason = f'no gain >= {s["min_gain"]} dB in {s["patience"]} evaluations'
                elif it >= s['max_iters']:
                    reason = f'max_iters {s["max_iters"]}'
                continue
            if (time.time() - t0) / 60 >= s['max_minutes']:
                reason = f'max_minutes {s["max_minutes"]} (at iteration {it})'
            elif proc.poll() is not None and not nxt.is_file():
                if proc.returncode != 0 or it < s['max_iters']:
                    log.flush()
                    tail = (work / 'train.log').read_text()[-3000:]
                    raise RuntimeError(f'{arch} teacher training failed (exit {proc.returncode}):\n{tail}')
            else:
                time.sleep(2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
    if stopper.best_iter is None:
        raise RuntimeError(f'{arch}: no checkpoint was evaluated before stopping ({reason})')
    # Re-save the best network through the project's atomic writer, as {'params': state_dict}.
    state = torch.load(best, map_location='cpu', weights_only=True)
    atomic_save({'params': state['params']}, best)
    net = load_net(arch, s, best)
    test = {clip: {'teacher': v} for clip, v in evaluate(net, data, 'test').items()}
    for clip, v in evaluate(None, data, 'test').items():
        test[clip]['bicubic'] = v
        test[clip]['gain_rgb'] = test[clip]['teacher']['psnr_rgb'] - v['psnr_rgb']
        test[clip]['gain_y'] = test[clip]['teacher']['psnr_y'] - v['psnr_y']
    import basicsr
    result = {
        'complete': True, 'arch': arch, 'network': network_options(arch, s), 'settings': s,
        'segments': SEGMENTS, 'stopped': reason, 'iterations': it, 'best_iter': stopper.best_iter,
        'best_val_psnr_rgb': stopper.best, 'val_bicubic_psnr_rgb': mean_rgb(evaluate(None, data, 'val')),
        'history': history, 'test': test, 'minutes': (time.time() - t0) / 60,
        'params': sum(p.numel() for p in net.parameters()), 'data': str(data), 'option_file': str(yml),
        'versions': {'torch': torch.__version__, 'basicsr': basicsr.__version__}, 'threads': threads,
    }
    atomic_write_text(entry / 'teacher.json', json.dumps(result, indent=2) + '\n')
    return result


def teacher(arch: str = 'bi', cache: str | os.PathLike | None = None, force: bool = False, threads: int = 1,
            **settings) -> tuple[Path, dict]:
    """(checkpoint, metadata) of the teacher with these settings: the cached one, else trained now."""
    s = resolve_settings(**settings)
    cache = Path(cache) if cache is not None else default_cache()
    key = teacher_key(arch, s)
    entry = entry_dir(cache, arch, key)
    meta = None if force else cached(entry)
    if meta is not None:
        return entry / 'net_g.pth', meta
    lock = entry / 'lock'
    while not _acquire(lock):
        say(f'{arch}: another process is training {entry}; waiting')
        time.sleep(30)
    try:
        meta = None if force else cached(entry)  # it may have finished while we waited
        if meta is None:
            (entry / 'teacher.json').unlink(missing_ok=True)
            meta = train(arch, s, entry, cache, threads)
    finally:
        lock.unlink(missing_ok=True)
    return entry / 'net_g.pth', meta


def teacher_checkpoint(arch: str = 'bi', **kwargs) -> Path:
    """Path of the trained teacher's ``net_g.pth`` ({'params': state_dict}); ``teacher.json`` lies beside it."""
    return teacher(arch, **kwargs)[0]


# ------------------------------------------------------------------------------------------------------- CLI
def table(metas: dict) -> str:
    lines = ['| Teacher | Test clip | Bicubic PSNR RGB / Y | Teacher PSNR RGB / Y | Gain RGB / Y |',
             '|---|---|---:|---:|---:|']
    for arch, m in metas.items():
        for clip, v in m['test'].items():
            b, t = v['bicubic'], v['teacher']
            lines.append(f'| {ARCHS[arch]} | {clip} {SEGMENTS[clip]["test"][0]}-{SEGMENTS[clip]["test"][1] - 1} | '
                         f'{b["psnr_rgb"]:.2f} / {b["psnr_y"]:.2f} | {t["psnr_rgb"]:.2f} / {t["psnr_y"]:.2f} | '
                         f'{v["gain_rgb"]:+.2f} / {v["gain_y"]:+.2f} |')
    return '\n'.join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', choices=['bi', 'uni', 'both'], default='both')
    p.add_argument('--cache', help=f'cache folder (default ${CACHE_ENV}, else <repo>/data/teachers)')
    p.add_argument('--force', action='store_true', help='retrain even when a cached teacher exists')
    p.add_argument('--threads', type=int, default=1, help='CPU threads per training run (default 1)')
    for k, v in DEFAULTS.items():
        kind = float if isinstance(v, float) else int
        p.add_argument(f'--{k.replace("_", "-")}', type=kind, default=v, help=f'default {v}')
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings = {k: getattr(args, k) for k in DEFAULTS}
    archs = ['bi', 'uni'] if args.arch == 'both' else [args.arch]
    if len(archs) > 1:  # the two trainings run side by side, one process each
        rest = argv if argv is not None else sys.argv[1:]
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        procs = [subprocess.Popen([sys.executable, __file__, *rest, '--arch', a]) for a in archs]
        try:
            if any([p.wait() for p in procs]):
                raise SystemExit('a teacher run failed')
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
    metas = {}
    for arch in archs:
        path, meta = teacher(arch, cache=args.cache, force=args.force and len(archs) == 1, threads=args.threads,
                             **settings)
        metas[arch] = meta
        say(f'{arch}: {path} (best val PSNR {meta["best_val_psnr_rgb"]:.3f} dB at iteration {meta["best_iter"]}, '
            f'stopped: {meta["stopped"]})')
    print(table(metas))
    return metas


if __name__ == '__main__':
    main()
