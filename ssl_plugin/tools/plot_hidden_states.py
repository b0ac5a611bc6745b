"""Plot the hidden states of pruned networks against the unpruned one along the recurrence (the paper's supplementary
Fig. 2: pruning error in the hidden state grows as it is carried from frame to frame, and Temporal Finetuning
reduces it).

For each propagation branch (BasicVSR: forward and backward) and each propagation step it records, with the engine's
``HiddenStateRecorder``, the hidden state of the unpruned reference and of every given pruned checkpoint on one clip,
and reports the mean hidden-state value and the pruned-vs-unpruned error (mean absolute difference, and the same
divided by the reference's mean |h|). Writes ``hidden_states.png`` and ``hidden_states.csv``.

    python -m ssl_plugin.tools.plot_hidden_states --opt experiments/<name>/<name>.yml \\
        --ckpt experiments/<name>/models/net_g_<prune iter>.pth experiments/<name>/models/net_g_latest.pth \\
        --labels 'pruned, before finetuning' 'after finetuning'

The unpruned reference (``--teacher``) is what the pruned network was cut from: by default the Temporal Finetuning
teacher stored in the run's newest training state (``training_states/<iter>.state``, the sparsity-trained network
with γ merged); a dense ``net_g_*.pth`` works too. Checkpoints are BasicSR ``net_g_*.pth`` files; a pruned one is
rebuilt from the pruning spec it carries.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import re
from pathlib import Path

FIELDS = ('network', 'direction', 'step', 'frame', 'mean_hidden', 'mean_abs_hidden', 'error_l1', 'relative_error')


# ----------------------------------------------------------------------------------------------------- inputs
def load_options(path: str | os.PathLike) -> dict:
    import yaml
    from basicsr.utils.options import ordered_yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'--opt {path} does not exist')
    with open(path) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    if not isinstance(opt, dict) or 'network_g' not in opt:
        raise ValueError(f'--opt {path} has no network_g section (a BasicSR option file is needed)')
    return opt


def default_clip(opt: dict) -> Path:
    """The first clip of the options' first validation / test dataset (BasicSR's VideoRecurrentTestDataset layout)."""
    for phase, dataset in (opt.get('datasets') or {}).items():
        if not phase.startswith(('val', 'test')) or not dataset.get('dataroot_lq'):
            continue
        root = Path(dataset['dataroot_lq'])
        meta = dataset.get('meta_info_file')
        if meta and Path(meta).is_file():
            first = Path(meta).read_text().split()
            if first:
                return root / first[0]
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if folders:
            return folders[0]
    raise ValueError('the options name no validation / test dataset with a readable dataroot_lq; give --lq FOLDER')


def read_clip(folder: Path, frames: int | None):
    """LQ frames of ``folder`` as a (1, T, C, H, W) float tensor in [0, 1] (BasicSR's reader: RGB)."""
    from basicsr.data.data_util import read_img_seq

    if not folder.is_dir():
        raise FileNotFoundError(f'--lq {folder} is not a folder of frames')
    paths = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in ('.png', '.jpg', '.jpeg', '.bmp'))
    if frames is not None:
        paths = paths[:frames]
    if len(paths) < 2:
        raise ValueError(f'--lq {folder}: needs at least 2 frames, found {len(paths)}')
    return read_img_seq(paths).unsqueeze(0)


def _state_iter(path: Path) -> int:
    m = re.match(r'(\d+)\.state$', path.name)
    return int(m.group(1)) if m else -1


def default_teacher(ckpt: Path) -> Path:
    """The newest training state holding a Temporal Finetuning teacher, of the run a checkpoint belongs to
    (``<exp>/models/x.pth`` -> ``<exp>/training_states``)."""
    import torch

    folder = ckpt.resolve().parent.parent / 'training_states'
    for state in sorted(folder.glob('*.state'), key=_state_iter, reverse=True):
        ssl = torch.load(state, map_location='cpu', weights_only=True).get('ssl') or {}
        if ssl.get('teacher_state') is not None:
            return state
    raise FileNotFoundError(f'no training state with an unpruned teacher in {folder}; give --teacher (a training '
                            'state of the run, or the dense net_g_*.pth the run started from)')


def build_reference(opt: dict, path: Path, param_key: str):
    """The unpruned network: a training state's teacher weights, or any (dense) BasicSR checkpoint."""
    import torch
    from basicsr.archs import build_network

    from ..basicsr_plugin import load_pruned_network

    net = build_network(opt['network_g'])
    if path.suffix == '.state':
        ssl = torch.load(path, map_location='cpu', weights_only=True).get('ssl') or {}
        if ssl.get('teacher_state') is None:
            raise ValueError(f'--teacher {path}: this training state holds no unpruned teacher (saved in the '
                             'sparsity stage?); use a finetune-stage state or the dense checkpoint')
        net.load_state_dict(ssl['teacher_state'])
    else:
        load_pruned_network(net, str(path), param_key=param_key)
    return net


# ----------------------------------------------------------------------------------------------------- measuring
def record(net, lq):
    """Hidden states per direction, in the order the network computes them, and the output."""
    import torch

    from ..core import HiddenStateRecorder

    net.eval()
    with torch.no_grad(), HiddenStateRecorder(net, detach=True) as rec:
        out = net(lq)
    return rec.states, out


def frame_of(direction: str, step: int, frames: int) -> int:
    """The frame a propagation step belongs to: backward branches run from the last frame to the first."""
    return frames - 1 - step if direction.startswith('backward') else step


def compare(reference: dict, states: dict, frames: int, label: str) -> list[dict]:
    rows = []
    for direction, ref in reference.items():
        got = states.get(direction)
        if got is None or len(got) != len(ref):
            raise ValueError(f'{label}: {direction} branch recorded {0 if got is None else len(got)} steps, the '
                             f'reference {len(ref)}')
        for step, (h, r) in enumerate(zip(got, ref)):
            if h.shape != r.shape:
                raise ValueError(f'{label}: {direction} hidden state {tuple(h.shape)} vs reference {tuple(r.shape)} '
                                 '(pruned without RSC?)')
            err = float((h - r).abs().mean())
            scale = float(r.abs().mean())
            rows.append({'network': label, 'direction': direction, 'step': step,
                         'frame': frame_of(direction, step, frames), 'mean_hidden': float(h.mean()),
                         'mean_abs_hidden': float(h.abs().mean()), 'error_l1': err,
                         'relative_error': err / scale if scale > 0 else math.nan})
    return rows


# ----------------------------------------------------------------------------------------------------- plotting
def plot(rows: list[dict], out: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    directions = list(dict.fromkeys(r['direction'] for r in rows))
    networks = list(dict.fromkeys(r['network'] for r in rows))
    fig, axes = plt.subplots(2, len(directions), figsize=(5.5 * len(directions), 7), squeeze=False)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for col, direction in enumerate(directions):
        for i, network in enumerate(networks):
            sel = [r for r in rows if r['direction'] == direction and r['network'] == network]
            steps = [r['step'] for r in sel]
            style = dict(color='black', linestyle='--') if i == 0 else dict(color=colors[(i - 1) % len(colors)])
            axes[0][col].plot(steps, [r['mean_hidden'] for r in sel], label=network, **style)
            if i > 0:
                axes[1][col].plot(steps, [r['error_l1'] for r in sel], label=network, **style)
        first = 'frame 0' if not direction.startswith('backward') else 'the last frame'
        axes[0][col].set_title(f'{direction} branch (step 0 = {first})', fontsize=10)
        axes[0][col].set_ylabel('mean hidden-state value')
        axes[1][col].set_ylabel('mean |h_pruned - h_unpruned|')
        for row in (0, 1):
            axes[row][col].set_xlabel('propagation step')
            axes[row][col].grid(alpha=0.3)
            axes[row][col].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = out / 'hidden_states.png'
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(opt_path, ckpts, labels=None, teacher=None, lq=None, frames=None, out=None, param_key='params',
        device='cpu') -> dict:
    import torch
    from basicsr.archs import build_network

    import ssl_plugin  # noqa: F401  (host compatibility shims before basicsr's registries are used)

    from ..basicsr_plugin import load_pruned_network, register
    register()

    opt = load_options(opt_path)
    ckpts = [Path(c) for c in ckpts]
    for c in ckpts:
        if not c.is_file():
            raise FileNotFoundError(f'--ckpt {c} does not exist')
    labels = list(labels) if labels else [c.stem for c in ckpts]
    if len(labels) != len(ckpts):
        raise ValueError(f'--labels: {len(labels)} labels for {len(ckpts)} checkpoints')
    teacher = Path(teacher) if teacher else default_teacher(ckpts[0])
    if not teacher.is_file():
        raise FileNotFoundError(f'--teacher {teacher} does not exist')
    clip = Path(lq) if lq else default_clip(opt)
    frames_lq = read_clip(clip, frames).to(device)
    n = frames_lq.shape[1]

    reference = build_reference(opt, teacher, param_key).to(device)
    ref_states, _ = record(reference, frames_lq)
    rows = compare(ref_states, ref_states, n, f'unpruned ({teacher.name})')
    for path, label in zip(ckpts, labels):
        net = load_pruned_network(build_network(opt['network_g']), str(path), param_key=param_key).to(device)
        states, _ = record(net, frames_lq)
        rows += compare(ref_states, states, n, label)
        del net, states
    torch.cuda.empty_cache() if device != 'cpu' else None

    out = Path(out) if out else ckpts[0].resolve().parent.parent / 'plots' / 'hidden_states'
    out.mkdir(parents=True, exist_ok=True)
    table = write_csv(rows, out / 'hidden_states.csv')
    png = plot(rows, out, f'{opt.get("name", "")}: hidden states on {clip.name} ({n} frames), '
                          f'reference {teacher.name}')
    return {'png': png, 'csv': table, 'rows': rows, 'clip': str(clip), 'teacher': str(teacher)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog='python -m ssl_plugin.tools.plot_hidden_states',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--opt', required=True, help='the BasicSR option file of the run (for network_g, and the '
                                                     'validation clip when --lq is not given)')
    parser.add_argument('--ckpt', required=True, nargs='+', help='pruned net_g_*.pth checkpoints to compare')
    parser.add_argument('--labels', nargs='+', help='one label per checkpoint (default: file names)')
    parser.add_argument('--teacher', help='unpruned reference: a training state (.state) of the run or a dense '
                                          'net_g_*.pth (default: the newest training state next to --ckpt)')
    parser.add_argument('--lq', help='folder of LQ frames (default: first clip of the validation dataset)')
    parser.add_argument('--frames', type=int, help='use only the first N frames')
    parser.add_argument('--param-key', default='params', help="checkpoint entry: 'params' or 'params_ema'")
    parser.add_argument('--device', default='cpu', help='torch device (default: cpu)')
    parser.add_argument('--out', help='output folder (default: <experiment>/plots/hidden_states)')
    args = parser.parse_args(argv)
    if args.frames is not None and args.frames < 2:
        parser.error('--frames must be at least 2')
    result = run(args.opt, args.ckpt, args.labels, args.teacher, args.lq, args.frames, args.out, args.param_key,
                 args.device)
    last = {}
    for r in result['rows']:
        last[(r['network'], r['direction'])] = r
    print(f'clip {result["clip"]}, reference {result["teacher"]}')
    for (network, direction), r in last.items():
        first = next(x for x in result['rows'] if x['network'] == network and x['direction'] == direction)
        print(f'  {network:32s} {direction:9s} error step 0 {first["error_l1"]:.4g} -> step {r["step"]} '
              f'{r["error_l1"]:.4g}; mean hidden {r["mean_hidden"]:.4g}')
    print(f'wrote {result["png"]} and {result["csv"]}')
    return result


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f'error: {e}')
