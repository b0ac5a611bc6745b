"""``make demo`` (``python -m ssl_plugin.demo``): the whole SSL story on the bundled real clips, on CPU, in minutes.

1. fetch the clips (bikes, carphone) and build a REDS-layout dataset from them (clip 000 held back);
2. train a small BasicVSR from scratch with BasicSR's own VideoRecurrentModel: the dense model (no weights can be
   downloaded here);
3. run SSL on it with ``options/ssl_basicvsr_demo.yml`` (sparsity stage -> prune -> finetuning with TF);
4. evaluate on the held-back clip and print params / MACs, PSNR / SSIM of the dense, pruned-before-finetuning and
   finetuned networks (and of L1-norm pruning without SIR, for contrast), and the measured speed-up.

Every training step is a real ``ssl_plugin/train.py`` run whose option file is written into the work folder, so it can
be rerun by hand. The networks are tiny and briefly trained: the numbers show the mechanics, not the paper's quality.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
DEMO_OPTIONS_NAME = 'ssl_basicvsr_demo.yml'   # shipped: options/ in a checkout, inside the package when installed
TRAIN_SCRIPT = PACKAGE / 'train.py'
DATA_DIR = Path('data') / 'demo_x4'
DENSE_NAME = 'basicvsr_demo_dense'
HELD_BACK = '000'
DEFAULT_DENSE_ITERS = 300
REPEATS = 5
#: (clip, first source frame, end, clip length, names): three 100-frame training clips and the held-back one.
SOURCES = (('bikes', 0, 200, 100, ['001', '002']), ('carphone', 0, 100, 100, ['003']),
           ('carphone', 100, 120, None, [HELD_BACK]))
#: Log lines worth showing while a run goes (everything is in the run's own log file too).
SHOWN = ('][epoch:', 'SSL:', 'Validation', '# psnr', '# ssim', 'Error', 'Traceback', 'Start training',
         'End of training')

_t0 = time.time()


def say(msg: str) -> None:
    print(f'[demo {time.time() - _t0:7.1f}s] {msg}', flush=True)


# ------------------------------------------------------------------------------------------------------- data
def build_data(work: Path, rebuild: bool) -> Path:
    """The demo dataset under ``work/data/demo_x4`` (kept when already complete)."""
    from .tools.clips import fetch_clips
    from .tools.make_dataset import build_dataset

    out = work / DATA_DIR
    record = out / 'dataset.json'
    wanted = {name for *_, names in SOURCES for name in names}
    if record.exists() and not rebuild:
        clips = set(json.loads(record.read_text()).get('clips', {}))
        if wanted <= clips:
            say(f'dataset {out} already built ({len(wanted)} clips)')
            return out
    paths = fetch_clips(names=sorted({src for src, *_ in SOURCES}))
    for i, (src, start, end, clip_len, names) in enumerate(SOURCES):
        say(f'dataset: {src} frames {start}..{end - 1} -> clip(s) {", ".join(names)}')
        build_dataset(paths[src], out, degradations=['BI'], start=start, end=end, clip_len=clip_len, names=names,
                      overwrite=(i == 0), append=(i > 0))
    return out


# ------------------------------------------------------------------------------------------------------- options
def _yaml():
    from basicsr.utils.options import ordered_yaml
    return ordered_yaml()


def load_options(path: Path) -> dict:
    import yaml
    with open(path) as f:
        return yaml.load(f, Loader=_yaml()[0])


def write_options(opt: dict, path: Path) -> Path:
    import yaml
    path.write_text(yaml.dump(opt, Dumper=_yaml()[1], sort_keys=False))
    return path


def sparsity_iters(opt: dict) -> int:
    """Length of the sparsity stage of ``opt['ssl']`` (the engine's own figure)."""
    from .core.algorithm import SSLConfig
    return SSLConfig.from_dict(opt['ssl']).sparsity_iters


def demo_options() -> Path:
    from .resources import find_option_file

    path = find_option_file(DEMO_OPTIONS_NAME)
    if path is None:
        raise SystemExit(f'demo: the shipped option file {DEMO_OPTIONS_NAME} is missing (a broken installation?)')
    return path


def make_run_options(work: Path, dense_iters: int | None, finetune_iters: int | None,
                     stabilize_iters: int | None = None) -> tuple[Path, Path, dict]:
    """The SSL run's options (the demo file, iterations optionally changed) and the dense run's (the same file as a
    plain BasicSR VideoRecurrentModel run: no ``ssl``, no TF, no validation during training)."""
    ssl_opt = load_options(demo_options())
    t = ssl_opt['train']
    old_sparsity = sparsity_iters(ssl_opt)
    if stabilize_iters is not None:
        ssl_opt['ssl']['reg']['stabilize_iter'] = stabilize_iters
    sparsity = sparsity_iters(ssl_opt)
    if finetune_iters is None:
        finetune_iters = t['total_iter'] - old_sparsity
    t['total_iter'] = sparsity + finetune_iters
    t['scheduler']['periods'] = [finetune_iters]
    # The checkpoint saved at the pruning iteration is the "pruned, before finetuning" network.
    ssl_opt['logger']['save_checkpoint_freq'] = sparsity
    ssl_opt['val']['val_freq'] = sparsity
    ssl_opt['path']['pretrain_network_g'] = f'experiments/{DENSE_NAME}/models/net_g_latest.pth'

    dense = copy.deepcopy(ssl_opt)
    dense['name'] = DENSE_NAME
    dense['model_type'] = 'VideoRecurrentModel'
    dense.pop('ssl')
    dense.pop('val')  # BasicSR's own validation needs CUDA; the demo evaluates afterwards
    dense['datasets'].pop('val')
    dense['path']['pretrain_network_g'] = None
    dt = dense['train']
    for key in ('tf_opt', 'sir_opt', 'scheduler_starts_at_finetune'):
        dt.pop(key, None)
    dt['ema_decay'] = 0
    dt['optim_g']['lr'] = 1e-3
    dt['total_iter'] = dense_iters if dense_iters is not None else DEFAULT_DENSE_ITERS
    dt['scheduler']['periods'] = [dt['total_iter']]
    dense['logger']['save_checkpoint_freq'] = dt['total_iter']
    dense['logger']['use_tb_logger'] = False
    return (write_options(dense, work / f'{DENSE_NAME}.yml'),
            write_options(ssl_opt, work / f'{ssl_opt["name"]}.yml'), ssl_opt)



# ------------------------------------------------------------------------------------------------------- runs
def run_training(yml: Path, work: Path, label: str) -> None:
    """``python ssl_plugin/train.py -opt yml`` in ``work``, showing its progress lines; stops the demo on failure."""
    cmd = [sys.executable, str(TRAIN_SCRIPT), '-opt', str(yml)]
    say(f'{label}: {" ".join(cmd[1:])}  (in {work})')
    env = dict(os.environ, PYTHONWARNINGS='ignore', PYTHONUNBUFFERED='1')
    tail: deque[str] = deque(maxlen=60)
    with subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if any(s in line for s in SHOWN) and 'SSL:   ' not in line:
                say(f'  {line.split(": ", 1)[-1].strip()[:150]}' if ' INFO: ' in line else f'  {line.strip()[:150]}')
    if proc.returncode != 0:
        print('\n'.join(tail), file=sys.stderr)
        raise SystemExit(f'demo: {label} failed (exit {proc.returncode}); its log is in {work / "experiments"}')


# ------------------------------------------------------------------------------------------------------- evaluation
def _clip(data: Path, sub: str, name: str):
    from basicsr.data.data_util import read_img_seq
    return read_img_seq(sorted(str(p) for p in (data / sub / name).glob('*.png')))


def evaluate(work: Path, data: Path, ssl_opt: dict, repeats: int = REPEATS) -> dict:
    import torch
    import torch.nn.functional as F
    from basicsr.archs import build_network
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img

    from .basicsr_plugin import load_pruned_network, register
    from .core import count_macs, count_params
    from .core.algorithm import SSLConfig, SSLController
    register()

    lq = _clip(data, 'BIx4', HELD_BACK).unsqueeze(0)
    gt = _clip(data, 'GT', HELD_BACK)
    net_opt = ssl_opt['network_g']
    models = work / 'experiments' / ssl_opt['name'] / 'models'
    sparsity = sparsity_iters(ssl_opt)
    paths = {'dense': work / 'experiments' / DENSE_NAME / 'models' / 'net_g_latest.pth',
             'ssl_pruned': models / f'net_g_{sparsity}.pth', 'ssl_finetuned': models / 'net_g_latest.pth'}
    nets = {k: load_pruned_network(build_network(net_opt), str(p)).eval() for k, p in paths.items()}
    l1 = load_pruned_network(build_network(net_opt), str(paths['dense'])).eval()
    cfg = SSLConfig.from_dict(dict(ssl_opt['ssl'], method='l1'))
    SSLController(cfg).start(l1, keep_teacher=False)
    nets = {'dense': nets['dense'], 'l1_pruned': l1, 'ssl_pruned': nets['ssl_pruned'],
            'ssl_finetuned': nets['ssl_finetuned']}

    def quality(out):
        psnr, ssim = [], []
        for i in range(out.shape[1]):
            img, ref = tensor2img([out[0, i]]), tensor2img([gt[i]])
            psnr.append(calculate_psnr(img, ref, crop_border=0, test_y_channel=False))
            ssim.append(calculate_ssim(img, ref, crop_border=0, test_y_channel=True))
        return statistics.mean(psnr), statistics.mean(ssim)

    rows = {}
    with torch.no_grad():
        scale = gt.shape[-1] // lq.shape[-1]
        bicubic = F.interpolate(lq[0], scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1)
        rows['bicubic'] = dict(zip(('psnr', 'ssim'), quality(bicubic.unsqueeze(0))))
        times = {key: [] for key in nets}
        for key, net in nets.items():
            psnr, ssim = quality(net(lq))  # also the warm-up
            params = count_params(net)
            rows[key] = dict(psnr=psnr, ssim=ssim, params=params, macs=count_macs(net, lq),
                             params_wo_spynet=params - sum(p.numel() for p in net.spynet.parameters()))
        flush = torch.set_flush_denormal(True)  # denormal floats would make CPU timings depend on weight values
        for _ in range(repeats):  # interleaved, so a busy moment of the machine hits every network alike
            for key, net in nets.items():
                t = time.perf_counter()
                net(lq)
                times[key].append(time.perf_counter() - t)
        if flush:
            torch.set_flush_denormal(False)
        for key in nets:
            rows[key]['seconds'] = min(times[key])  # the least disturbed run
    return {'clip': {'name': HELD_BACK, 'frames': int(lq.shape[1]), 'lq': list(lq.shape[-2:]),
                     'gt': list(gt.shape[-2:])}, 'rows': rows, 'checkpoints': {k: str(p) for k, p in paths.items()}}


LABELS = {'bicubic': 'bicubic upsampling', 'dense': 'dense BasicVSR (trained from scratch)',
          'l1_pruned': 'L1-norm pruned dense, no finetuning', 'ssl_pruned': 'SSL: pruned, before finetuning',
          'ssl_finetuned': 'SSL: pruned + finetuned (TF)'}


def print_summary(summary: dict, net_opt: dict, ratio: float) -> None:
    rows, clip = summary['rows'], summary['clip']
    print()
    print(f'SSL demo summary -- BasicVSR num_feat {net_opt["num_feat"]}, num_block {net_opt["num_block"]}, pruning '
          f'ratio {ratio}; held-back clip {clip["name"]}: {clip["frames"]} frames, '
          f'{clip["lq"][1]}x{clip["lq"][0]} -> {clip["gt"][1]}x{clip["gt"][0]}')
    head = f'{"":40s} {"params":>10s} {"w/o SPyNet":>10s} {"GMACs/clip":>10s} {"PSNR RGB":>9s} {"SSIM Y":>7s} ' \
           f'{"s/clip":>7s}'
    print(head)
    print('-' * len(head))
    for key, label in LABELS.items():
        r = rows[key]
        if 'params' in r:
            print(f'{label:40s} {r["params"]:>10,d} {r["params_wo_spynet"]:>10,d} {r["macs"] / 1e9:>10.2f} '
                  f'{r["psnr"]:>9.2f} {r["ssim"]:>7.4f} {r["seconds"]:>7.3f}')
        else:
            print(f'{label:40s} {"":>10s} {"":>10s} {"":>10s} {r["psnr"]:>9.2f} {r["ssim"]:>7.4f} {"":>7s}')
    d, p = rows['dense'], rows['ssl_finetuned']
    print('-' * len(head))
    print(f'pruned vs dense: params x{d["params"] / p["params"]:.2f} (without SPyNet, which is never pruned: '
          f'x{d["params_wo_spynet"] / p["params_wo_spynet"]:.2f}), MACs x{d["macs"] / p["macs"]:.2f}, '
          f'measured speed-up x{d["seconds"] / p["seconds"]:.2f} (CPU, fastest of {REPEATS} forwards each)')


# ------------------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog='python -m ssl_plugin.demo', description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='experiments/ssl_demo',
                        help='folder for the dataset, option files, runs and summary (default: %(default)s)')
    parser.add_argument('--dense-iters', type=int, default=None,
                        help=f'iterations of dense training (default {DEFAULT_DENSE_ITERS})')
    parser.add_argument('--finetune-iters', type=int, default=None,
                        help='finetuning iterations after pruning (default: as in options/ssl_basicvsr_demo.yml)')
    parser.add_argument('--stabilize-iters', type=int, default=None,
                        help='SIR stabilisation iterations T2 (default: as in options/ssl_basicvsr_demo.yml)')
    parser.add_argument('--rebuild-data', action='store_true', help='rebuild the dataset even if present')
    parser.add_argument('--prepare-only', action='store_true',
                        help='stop after step 1: build the dataset and write the two option files, then print the '
                             'training commands')
    args = parser.parse_args(argv)

    import ssl_plugin  # noqa: F401  (compat shims before basicsr)

    from .basicsr_plugin import register
    register()

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    say(f'[1/4] data -> {work / DATA_DIR}')
    data = build_data(work, args.rebuild_data)
    dense_yml, ssl_yml, ssl_opt = make_run_options(work, args.dense_iters, args.finetune_iters,
                                                     args.stabilize_iters)
    dense_iters = load_options(dense_yml)['train']['total_iter']
    if args.prepare_only:
        for yml in (dense_yml, ssl_yml):
            say(f'wrote {yml}; run it with: cd {work} && {sys.executable} {TRAIN_SCRIPT} -opt {yml.name}')
        return {'data': str(data), 'options': [str(dense_yml), str(ssl_yml)]}
    say(f'[2/4] dense BasicVSR from scratch, {dense_iters} iterations (BasicSR VideoRecurrentModel)')
    run_training(dense_yml, work, 'dense training')
    say(f'[3/4] SSL: {sparsity_iters(ssl_opt)} sparsity iterations, prune, '
        f'{ssl_opt["train"]["total_iter"] - sparsity_iters(ssl_opt)} finetuning iterations')
    run_training(ssl_yml, work, 'SSL')
    say('[4/4] evaluating on the held-back clip')
    summary = evaluate(work, data, ssl_opt)
    summary['seconds_total'] = time.time() - _t0
    (work / 'demo_summary.json').write_text(json.dumps(summary, indent=2))
    print_summary(summary, ssl_opt['network_g'], ssl_opt['ssl']['pruning_ratio'])
    say(f'done; summary in {work / "demo_summary.json"}')
    return summary


if __name__ == '__main__':
    main()
