"""Which selection survives trained weights: raw global pool vs normalised global pool vs per-layer (local) L1 selection
on the trained teacher, one-shot L1 pruning at one ratio, then the same short finetuning for every selection.

Why: BasicSR / MMagic initialise residual blocks 10x smaller than the reconstruction convs, so the paper's raw global
pool of L1 scores may keep cutting (almost) only residual units after training too. This benchmark measures, on the
trained teacher of ``benchmarks/teacher.py`` (cached; BasicVSR, bikes + carphone), for each selection: the kept widths
per part, the MAC ratio on the teacher's training clip, PSNR on the held-out test segments right after the cut, and
after a fixed finetuning budget (the same iterations, crops, seed and learning rate for every selection: Adam,
Charbonnier loss, SPyNet frozen as in the teacher's training, cosine schedule to 0).

    python benchmarks/selection.py                              # the cached 'bi' teacher, ratio 0.5
    python benchmarks/selection.py --target-mac-ratio 1.44             # every selection at the same MAC cost
    python benchmarks/selection.py --checkpoint net_g.pth --num-feat 32 --num-block 5   # any dense BasicVSR
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / 'benchmarks'):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import ssl_plugin  # noqa: E402,F401  (host compatibility shims before basicsr)

#: name -> the ssl: options of the selection (method l1: S removed at once)
SELECTIONS = {
    'raw global (paper)': {'scope': 'global', 'max_layer_ratio': 1.0},
    'normalised global, no cap': {'scope': 'global_normalized', 'max_layer_ratio': 1.0},
    'normalised global, cap 0.8 (default)': {'scope': 'global_normalized', 'max_layer_ratio': 0.8},
    'local': {'scope': 'local', 'max_layer_ratio': 1.0},
}


def say(msg: str) -> None:
    print(f'[selection {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def find_teacher(cache: Path, arch: str) -> tuple[Path, dict]:
    """The newest complete cached teacher of ``arch`` (never trains one: that is benchmarks/teacher.py's job)."""
    entries = sorted(Path(cache).glob(f'{arch}-*/teacher.json'), key=lambda p: p.stat().st_mtime)
    for meta_path in reversed(entries):
        meta = json.loads(meta_path.read_text())
        if meta.get('complete') and (meta_path.parent / 'net_g.pth').is_file():
            return meta_path.parent / 'net_g.pth', meta
    raise FileNotFoundError(f'no complete {arch!r} teacher under {cache}: run python benchmarks/teacher.py first '
                            '(or pass --checkpoint)')


def part_widths(report: dict) -> dict:
    """Per part: kept / units summed over its keys, and per reconstruction layer its kept count."""
    out = {}
    for key, v in report['layers'].items():
        part = key.split('.')[0] if '.main.' in key else 'reconstruction'
        kept, units = out.get(part, (0, 0))
        out[part] = (kept + v['kept'], units + v['units'])
    recon = {k: f'{v["kept"]}/{v["units"]}' for k, v in report['layers'].items() if '.main.' not in k}
    return {'parts': {p: f'{k}/{n}' for p, (k, n) in out.items()}, 'reconstruction_layers': recon}


def evaluate(teacher_mod, net, data: Path, frames: int | None, crop: int | None) -> dict:
    """Per test segment: PSNR (RGB / Y) of ``net`` (None: bicubic) on its first ``frames`` frames (None: all), on the
    centre ``crop`` x ``crop`` LR pixels (None: whole frames) and the matching GT."""
    import torch
    scores = {}
    with torch.no_grad():
        for clip in teacher_mod.SEGMENTS:
            lq, gt = teacher_mod.read_segment(data, f'{clip}_test')
            lq, gt = (lq[:frames], gt[:frames]) if frames else (lq, gt)
            if crop:
                r = gt.shape[-1] // lq.shape[-1]
                h, w = min(crop, lq.shape[-2]), min(crop, lq.shape[-1])
                y, x = (lq.shape[-2] - h) // 2, (lq.shape[-1] - w) // 2
                lq, gt = lq[..., y:y + h, x:x + w], gt[..., y * r:(y + h) * r, x * r:(x + w) * r]
            sr = teacher_mod.bicubic(lq, gt) if net is None else net(lq.unsqueeze(0))[0]
            scores[clip] = teacher_mod.psnr(sr, gt)
    return scores


def load_training_clips(teacher_mod, data: Path):
    """Every training segment as (LQ, GT) tensors (n, 3, h, w) in memory."""
    clips = []
    for name, (_, split, _, _) in teacher_mod.clip_names().items():
        if split == 'train':
            clips.append(teacher_mod.read_segment(data, name))
    return clips


def crops(clips, n: int, frames: int, gt_size: int, scale: int, batch: int, seed: int):
    """``n`` batches of random (clip, start, position, flip) crops; the same list for every selection."""
    import torch
    rng = random.Random(seed)
    lr = gt_size // scale
    out = []
    for _ in range(n):
        lqs, gts = [], []
        for _ in range(batch):
            lq, gt = clips[rng.randrange(len(clips))]
            t = rng.randrange(lq.shape[0] - frames + 1)
            y, x = rng.randrange(lq.shape[-2] - lr + 1), rng.randrange(lq.shape[-1] - lr + 1)
            a = lq[t:t + frames, :, y:y + lr, x:x + lr]
            b = gt[t:t + frames, :, y * scale:(y + lr) * scale, x * scale:(x + lr) * scale]
            if rng.random() < 0.5:
                a, b = a.flip(-1), b.flip(-1)
            lqs.append(a)
            gts.append(b)
        out.append((torch.stack(lqs), torch.stack(gts)))
    return out


def finetune(net, batches, lr: float) -> list[float]:
    """Adam + Charbonnier over ``batches``, cosine learning rate to 0; SPyNet frozen (as in the teacher's run)."""
    import torch
    from basicsr.losses.basic_loss import CharbonnierLoss
    net.train()
    for name, p in net.named_parameters():
        p.requires_grad_('spynet' not in name)
    params = [p for p in net.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=len(batches), eta_min=0)
    loss_fn = CharbonnierLoss(loss_weight=1.0, reduction='mean')
    losses = []
    for lq, gt in batches:
        optim.zero_grad()
        loss = loss_fn(net(lq), gt)
        loss.backward()
        optim.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()
    return losses


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='bi', choices=['bi', 'uni'], help='teacher of benchmarks/teacher.py')
    p.add_argument('--cache', help='teacher cache (default $SSL_PLUGIN_CACHE, else <repo>/data/teachers)')
    p.add_argument('--checkpoint', help='a dense BasicSR checkpoint ({"params": ...}) instead of the cached teacher')
    p.add_argument('--num-feat', type=int, help='with --checkpoint: its num_feat')
    p.add_argument('--num-block', type=int, help='with --checkpoint: its num_block')
    p.add_argument('--ratio', type=float, default=0.5)
    p.add_argument('--target-mac-ratio', type=float, help='instead of --ratio: every selection at this MAC ratio '
                   '(ssl.target_mac_ratio), so the selections are compared at equal cost')
    p.add_argument('--only', nargs='+', choices=list(SELECTIONS), help='run only these selections')
    p.add_argument('--iters', type=int, default=200, help='finetuning iterations per selection (0: none)')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--frames', type=int, default=5)
    p.add_argument('--gt-size', type=int, default=144)
    p.add_argument('--lr', type=float, default=2e-4)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    p.add_argument('--eval-frames', type=int, default=20, help='test on the first N frames of each test segment '
                   '(0: all)')
    p.add_argument('--eval-crop', type=int, default=64, help='test on the centre N x N LR pixels (0: whole frames)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', help='write every figure here')
    p.add_argument('--merge', nargs='+', metavar='JSON',
                   help='only combine the rows of earlier runs (e.g. one process per selection, --only) into --json')
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.json)

    import teacher as teacher_mod
    import torch

    from ssl_plugin.core import count_macs, describe
    from ssl_plugin.core.algorithm import SSLConfig, SSLController
    from ssl_plugin.core.io import atomic_write_text
    from ssl_plugin.core.selection import example_clip

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache) if args.cache else teacher_mod.default_cache()
    if args.checkpoint:
        if not (args.num_feat and args.num_block):
            p.error('--checkpoint needs --num-feat and --num-block')
        settings = teacher_mod.resolve_settings(num_feat=args.num_feat, num_block=args.num_block)
        ckpt, meta = Path(args.checkpoint), {'settings': settings, 'source': str(args.checkpoint)}
    else:
        ckpt, meta = find_teacher(cache, args.arch)
        settings = meta['settings']
    data = teacher_mod.build_data(cache)
    scale = teacher_mod.SCALE
    size = [settings['num_frame'], settings['gt_size'] // scale, settings['gt_size'] // scale]
    say(f'teacher {ckpt} ({settings["num_feat"]} channels, {settings["num_block"]} blocks); MACs on LR clips {size}')
    dense = teacher_mod.load_net(args.arch, settings, ckpt)
    t0 = time.time()
    dense_test = evaluate(teacher_mod, dense, data, args.eval_frames, args.eval_crop)
    bicubic_test = evaluate(teacher_mod, None, data, args.eval_frames, args.eval_crop)
    say(f'dense test PSNR {teacher_mod.mean_rgb(dense_test):.3f} dB, bicubic {teacher_mod.mean_rgb(bicubic_test):.3f}')
    clips = load_training_clips(teacher_mod, data)
    batches = crops(clips, args.iters, args.frames, args.gt_size, scale, args.batch, args.seed)
    x = example_clip(dense, describe(dense), size)
    rows = {}
    for name, options in SELECTIONS.items():
        if args.only and name not in args.only:
            continue
        t1 = time.time()
        net = copy.deepcopy(dense)
        budget = {'target_mac_ratio': args.target_mac_ratio} if args.target_mac_ratio else {'pruning_ratio': args.ratio}
        ctrl = SSLController(SSLConfig.from_dict({'method': 'l1', **budget, **options}))
        ctrl.start(net, keep_teacher=False, size=size)
        rep = ctrl.report
        assert count_macs(net, x) == rep['macs_pruned']  # the report describes the network that is evaluated
        cut = evaluate(teacher_mod, net, data, args.eval_frames, args.eval_crop)
        torch.manual_seed(args.seed)
        losses = finetune(net, batches, args.lr) if args.iters else []
        tuned = evaluate(teacher_mod, net, data, args.eval_frames, args.eval_crop) if args.iters else cut
        rows[name] = {'options': options, 'pruning_ratio': ctrl.ratio, **part_widths(rep),
                      'mac_ratio': rep['mac_ratio'],
                      'param_ratio': rep['param_ratio'], 'macs_pruned': rep['macs_pruned'],
                      'params_pruned': rep['params_pruned'], 'psnr_cut': teacher_mod.mean_rgb(cut),
                      'psnr_finetuned': teacher_mod.mean_rgb(tuned), 'test_cut': cut, 'test_finetuned': tuned,
                      'loss_first_last': [statistics.mean(losses[:10]), statistics.mean(losses[-10:])] if losses
                      else None, 'minutes': (time.time() - t1) / 60, 'report': rep}
        r = rows[name]
        say(f'{name}: parts {r["parts"]}, MAC ratio x{r["mac_ratio"]:.3f}, PSNR cut {r["psnr_cut"]:.3f} -> '
            f'finetuned {r["psnr_finetuned"]:.3f} dB ({r["minutes"]:.1f} min)')
    result = {
        'teacher': {'checkpoint': str(ckpt), 'settings': settings, 'psnr_test': teacher_mod.mean_rgb(dense_test),
                    'bicubic_test': teacher_mod.mean_rgb(bicubic_test), 'test': dense_test,
                    'stopped': meta.get('stopped'), 'best_iter': meta.get('best_iter')},
        'ratio': None if args.target_mac_ratio else args.ratio, 'target_mac_ratio': args.target_mac_ratio,
        'size': size, 'eval_frames': args.eval_frames or None,
        'eval_crop': args.eval_crop or None,
        'finetune': {'iters': args.iters, 'batch': args.batch, 'frames': args.frames, 'gt_size': args.gt_size,
                     'lr': args.lr, 'seed': args.seed},
        'rows': rows, 'minutes': (time.time() - t0) / 60, 'threads': torch.get_num_threads(),
        'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}',
    }
    print(table(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + '\n')
    return result


def merge(paths: list, out: str | None) -> dict:
    """One result from runs of single selections with the same teacher and budget (rows in the given order)."""
    from ssl_plugin.core.io import atomic_write_text
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    for other, path in zip(parts[1:], paths[1:]):
        for key in ('ratio', 'target_mac_ratio', 'size', 'finetune', 'eval_frames', 'eval_crop'):
            if other.get(key) != first.get(key):
                raise ValueError(f'{path}: {key} differs from {paths[0]}; only runs of one setting merge')
        for key in ('settings', 'psnr_test'):  # the same teacher (its path may be written differently)
            if other['teacher'].get(key) != first['teacher'].get(key):
                raise ValueError(f'{path}: {key} differs from {paths[0]}; only runs of one setting merge')
    result = dict(first, rows={k: v for r in parts for k, v in r['rows'].items()},
                  minutes=max(r['minutes'] for r in parts), processes=len(parts))
    print(table(result))
    if out:
        atomic_write_text(out, json.dumps(result, indent=1) + '\n')
    return result


def table(result: dict) -> str:
    t = result['teacher']
    at = f'ratio {result["ratio"]:.2g}' if result.get('ratio') else f'MAC ratio {result["target_mac_ratio"]}'
    lines = [f'| Selection ({at}) | pruning ratio | kept units per part | reconstruction kept (fusion, upconv1, '
             'upconv2, conv_hr) | MAC ratio | PSNR after the cut | PSNR after finetuning |',
             '|---|---:|---|---|---:|---:|---:|']
    for name, r in result['rows'].items():
        parts = ', '.join(f'{p} {w}' for p, w in r['parts'].items() if p != 'reconstruction')
        recon = ', '.join(r['reconstruction_layers'].values())
        ratio = r.get('pruning_ratio', result.get('ratio'))
        lines.append(f'| {name} | {ratio:.3g} | {parts} | {recon} | {r["mac_ratio"]:.2f} | {r["psnr_cut"]:.2f} | '
                     f'{r["psnr_finetuned"]:.2f} |')
    f = result['finetune']
    lines.append('')
    n = f'first {result["eval_frames"]} frames of ' if result.get('eval_frames') else ''
    n = (f'centre {result["eval_crop"]}x{result["eval_crop"]} LR px of the ' if result.get('eval_crop') else '') + n
    lines.append(f'PSNR RGB on the {n}the test segments (bikes, carphone; mean of the clips). '
                 f'Teacher: BasicVSR {t["settings"]["num_feat"]}/{t["settings"]["num_block"]}, test PSNR RGB '
                 f'{t["psnr_test"]:.2f} dB (bicubic {t["bicubic_test"]:.2f}); MACs on LR clips {result["size"]}; '
                 f'finetuning {f["iters"]} iterations, batch {f["batch"]} x {f["frames"]} frames, GT crop '
                 f'{f["gt_size"]}, Adam lr {f["lr"]} cosine; {result["minutes"]:.1f} min wall, '
                 f'{result.get("processes", 1)} process(es) of {result["threads"]} thread(s) ({result["machine"]}).')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
