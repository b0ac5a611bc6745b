"""What to do with Adam at the cut: a fresh optimizer, or the carried moments (core/optim_state.py)?

One dense BasicVSR (BasicSR arch) is trained briefly on the real carphone clip, then one SSL sparsity stage runs
(engine controller, Adam, Charbonnier + L_SIR) and the network is pruned. From that one pruned state two finetuning
runs start with identical batches and learning rates: ``fresh`` (a new Adam) and ``carried`` (every surviving
parameter's moments and step count, sliced for cut tensors). Both add L_TF against the unpruned teacher, as Algorithm
1 finetunes. The loss of each finetuning iteration is recorded; the question is the jump right after the cut.

    python benchmarks/adam_at_prune.py --json docs/results/adam_at_prune.json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_env import code_version, write_atomic  # noqa: E402

import ssl_plugin  # noqa: E402,F401  (host compatibility shims before basicsr is imported)


def frames_of(video: Path, start: int, count: int) -> torch.Tensor:
    cap = cv2.VideoCapture(str(video))
    out = []
    for i in range(start + count):
        ok, frame = cap.read()
        if not ok:
            raise ValueError(f'{video}: only {i} frames')
        if i >= start:
            out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)


class Batches:
    """Random GT crops of a clip and their bicubic x``scale`` LQ, from a seeded generator (replayable)."""

    def __init__(self, gt: torch.Tensor, frames: int, lq_size: int, scale: int, seed: int):
        self.gt, self.frames, self.lq, self.scale = gt, frames, lq_size, scale
        self.g = torch.Generator().manual_seed(seed)

    def fork(self) -> 'Batches':
        """A copy that will draw the same batches as this one from now on."""
        other = copy.copy(self)
        other.g = torch.Generator()
        other.g.set_state(self.g.get_state())
        return other

    def __next__(self):
        t, _, h, w = self.gt.shape
        size = self.lq * self.scale
        i = int(torch.randint(0, t - self.frames + 1, (1,), generator=self.g))
        y = int(torch.randint(0, h - size + 1, (1,), generator=self.g))
        x = int(torch.randint(0, w - size + 1, (1,), generator=self.g))
        gt = self.gt[i:i + self.frames, :, y:y + size, x:x + size]
        lq = F.interpolate(gt, scale_factor=1 / self.scale, mode='bicubic', antialias=True, align_corners=False)
        return lq.clamp(0, 1).unsqueeze(0), gt.unsqueeze(0)


def charbonnier(a, b):
    return torch.sqrt((a - b) ** 2 + 1e-12).mean()


def train(net, opt, batches, iters, ctrl=None):
    losses = []
    for _ in range(iters):
        lq, gt = next(batches)
        opt.zero_grad()
        if ctrl is None:
            pix = charbonnier(net(lq), gt)
            terms = {}
        else:
            with ctrl.clip_losses(net, lq) as terms:
                out = net(lq)
            pix = charbonnier(out, gt)
        loss = pix + sum(terms.values())
        loss.backward()
        opt.step()
        losses.append({'total': float(loss), 'pix': float(pix), **{k: float(v) for k, v in terms.items()}})
        if ctrl is not None:
            ctrl.step()
    return losses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--num-feat', type=int, default=16)
    p.add_argument('--num-block', type=int, default=2)
    p.add_argument('--dense-iters', type=int, default=200)
    p.add_argument('--finetune-iters', type=int, default=40)
    p.add_argument('--ratio', type=float, default=0.5)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--frames', type=int, default=5)
    p.add_argument('--lq-size', type=int, default=36)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', type=Path)
    args = p.parse_args(argv)

    from basicsr.archs.basicvsr_arch import BasicVSR

    from ssl_plugin.core import optim_state
    from ssl_plugin.core.algorithm import SSLConfig, SSLController
    from ssl_plugin.tools.clips import clip_path

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    gt = frames_of(clip_path('carphone'), 0, 100)
    batches = Batches(gt, args.frames, args.lq_size, 4, args.seed)
    net = BasicVSR(num_feat=args.num_feat, num_block=args.num_block)
    started = time.time()
    dense_log = train(net, torch.optim.Adam(net.parameters(), lr=args.lr), batches, args.dense_iters)

    cfg = SSLConfig.from_dict({'pruning_ratio': args.ratio, 'scope': 'local',
                               'reg': {'delta': 0.01, 'interval': 1, 'ceiling': 0.1, 'stabilize_iter': 20}})
    ctrl = SSLController(cfg).configure(teacher_factory=lambda: BasicVSR(num_feat=args.num_feat,
                                                                         num_block=args.num_block))
    ctrl.start(net)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sparsity_log = train(net, opt, batches, cfg.reg.stabilize_iter + 10, ctrl)
    if not ctrl.prune_due:
        raise RuntimeError('the sparsity stage did not finish')
    snap = optim_state.snapshot(opt, net)
    ctrl.prune(net)
    cuts = ctrl.cuts

    results = {}
    for mode in ('fresh', 'carried'):
        student = copy.deepcopy(net)
        run_ctrl = copy.deepcopy(ctrl)
        run_ctrl.configure(teacher_factory=ctrl.teacher_factory)
        new = torch.optim.Adam(student.parameters(), lr=args.lr)
        if mode == 'carried':
            carried, dropped = optim_state.carried_state(snap, student, cuts)
            assert not dropped
            optim_state.load_carried(new, student, carried)
        replay = batches.fork()  # both modes see the same batches
        results[mode] = train(student, new, replay, args.finetune_iters, run_ctrl)

    def mean(log, a, b, key='total'):
        return float(np.mean([r[key] for r in log[a:b]]))

    summary = {
        'settings': vars(args) | {'json': str(args.json) if args.json else None},
        'code_version': code_version(),
        'seconds': time.time() - started,
        'dense_last10_loss': mean(dense_log, -10, None),
        'sparsity_last5_pix': mean(sparsity_log, -5, None, 'pix'),
        # Iteration 1's loss is computed before the first step, so it is the same in both modes.
        'finetune': {mode: {'first': log[0]['total'], 'mean_2_6': mean(log, 1, 6), 'mean_7_20': mean(log, 6, 20),
                            'mean_last10': mean(log, -10, None), 'pix_2_6': mean(log, 1, 6, 'pix'),
                            'tf_2_6': mean(log, 1, 6, 'tf'), 'per_iter': log}
                     for mode, log in results.items()},
    }
    print(f'pixel loss before the cut (sparsity stage, last 5 iterations): {summary["sparsity_last5_pix"]:.5f}')
    print('| Adam at the cut | loss, iteration 1 | iterations 2-6 (pixel / TF) | 7-20 | last 10 |')
    print('|---|---|---|---|---|')
    for mode, r in summary['finetune'].items():
        print(f'| {mode} | {r["first"]:.5f} | {r["mean_2_6"]:.5f} ({r["pix_2_6"]:.5f} / {r["tf_2_6"]:.5f}) | '
              f'{r["mean_7_20"]:.5f} | {r["mean_last10"]:.5f} |')
    if args.json:
        write_atomic(args.json, json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
