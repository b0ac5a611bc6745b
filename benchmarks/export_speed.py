"""Speed of the exported files: dense vs SSL-pruned BasicVSR in ONNX Runtime on CPU, beside PyTorch, in one run.

Builds the network of ``speed.py`` (BasicSR BasicVSR, 64 channels, 30 blocks per branch, per-layer L1 selection at
ratio 0.5), exports the dense and the pruned copy with ``ssl_plugin.tools.export`` (``torch.onnx.export(dynamo=True)``,
fixed shape), and times four models taking turns round by round (one forward each per round, as in ``speed.py``):
PyTorch dense / pruned (NCHW) and ONNX Runtime dense / pruned, each with the same number of CPU threads. The first
forward of each ONNX file is compared with PyTorch (max abs error). ``speedup`` = best dense round / best pruned round.

    python benchmarks/export_speed.py --threads 2 --frames 3 --repeats 5 --json export_speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    import ssl_plugin  # noqa: F401  (host compatibility shims before basicsr)
except ImportError:  # run from a checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ssl_plugin  # noqa: F401

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_env import code_version, steal_seconds, write_atomic  # noqa: E402
from speed import build_dense, pruned_copy  # noqa: E402

from ssl_plugin.core import count_macs, count_params  # noqa: E402
from ssl_plugin.tools.export import INPUT, export_onnx, onnx_session  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--ratio', type=float, default=0.5)
    p.add_argument('--num-feat', type=int, default=64)
    p.add_argument('--num-block', type=int, default=30)
    p.add_argument('--frames', type=int, default=3)
    p.add_argument('--size', type=int, nargs=2, default=[180, 320], metavar=('H', 'W'))
    p.add_argument('--repeats', type=int, default=5, help='timed rounds')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=2, help='CPU threads of torch and of ONNX Runtime')
    p.add_argument('--scope', choices=['local', 'global'], default='local')
    p.add_argument('--align', type=int, default=1)
    p.add_argument('--weights', choices=['init', 'random'], default='init')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--keep', type=Path, default=None, help='keep the exported files in this folder')
    p.add_argument('--json', type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dense = build_dense(args)
    pruned = pruned_copy(dense, args.ratio, args)
    x = torch.rand(1, args.frames, 3, *args.size, generator=torch.Generator().manual_seed(args.seed))
    nets = {'dense': dense, 'pruned': pruned}
    info = {k: {'params': count_params(n), 'macs': count_macs(n, x)} for k, n in nets.items()}

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix='export_speed_'))
    folder.mkdir(parents=True, exist_ok=True)
    sessions = {}
    for key, net in nets.items():
        path = folder / f'basicvsr_{key}.onnx'
        t = time.perf_counter()
        export_onnx(net, x, False, str(path))
        info[key]['export_s'] = time.perf_counter() - t
        info[key]['onnx_mb'] = path.stat().st_size / 2 ** 20
        sessions[key] = onnx_session(str(path), threads=args.threads)
        print(f'exported {key} in {info[key]["export_s"]:.0f} s ({info[key]["onnx_mb"]:.1f} MB)', flush=True)

    feed = x.numpy()
    runners = {('torch', k): (lambda n=n: n(x)) for k, n in nets.items()}
    runners.update({('onnxruntime', k): (lambda s=s: s.run(None, {INPUT: feed})[0]) for k, s in sessions.items()})
    times = {r: [] for r in runners}
    steal = {r: [] for r in runners}
    errors = {}
    with torch.no_grad():
        for k, net in nets.items():  # warm-up, and the ONNX files against PyTorch
            ref = net(x).numpy()
            errors[k] = float(np.abs(runners[('onnxruntime', k)]() - ref).max())
            for _ in range(args.warmup - 1):
                runners[('torch', k)]()
                runners[('onnxruntime', k)]()
        for i in range(args.repeats):
            for r, fn in runners.items():
                s0, t0 = steal_seconds(), time.perf_counter()
                fn()
                times[r].append(time.perf_counter() - t0)
                s1 = steal_seconds()
                steal[r].append(None if s0 is None or s1 is None else s1 - s0)
            print(f'round {i + 1}/{args.repeats}: ' + ', '.join(f'{a} {k} {times[(a, k)][-1]:.2f} s'
                                                              for a, k in runners), flush=True)

    rows = []
    for runtime in ('torch', 'onnxruntime'):
        d, p = times[(runtime, 'dense')], times[(runtime, 'pruned')]
        rows.append({'runtime': runtime, 'best_dense_s': min(d), 'best_pruned_s': min(p),
                     'median_dense_s': statistics.median(d), 'median_pruned_s': statistics.median(p),
                     'speedup': min(d) / min(p), 'mac_ratio': info['dense']['macs'] / info['pruned']['macs'],
                     'times_dense_s': d, 'times_pruned_s': p,
                     'steal_dense_s': steal[(runtime, 'dense')], 'steal_pruned_s': steal[(runtime, 'pruned')]})
    import onnxruntime
    print(f'BasicVSR {args.num_feat}/{args.num_block}, input {tuple(x.shape)}, ratio {args.ratio} ({args.scope}), '
          f'{args.threads} threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, '
          f'{args.repeats} rounds')
    print(f'{"runtime":<13}{"dense s":>9}{"pruned s":>10}{"speedup":>9}{"MAC ratio":>11}{"/MAC":>7}')
    for r in rows:
        print(f'{r["runtime"]:<13}{r["best_dense_s"]:>9.2f}{r["best_pruned_s"]:>10.2f}{r["speedup"]:>9.2f}'
              f'{r["mac_ratio"]:>11.2f}{r["speedup"] / r["mac_ratio"]:>7.2f}')
    t, o = rows
    print(f'ONNX Runtime vs PyTorch (best rounds): dense x{t["best_dense_s"] / o["best_dense_s"]:.2f}, '
          f'pruned x{t["best_pruned_s"] / o["best_pruned_s"]:.2f}; max abs error ONNX vs PyTorch: '
          f'dense {errors["dense"]:.2g}, pruned {errors["pruned"]:.2g}')
    result = {'args': {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, 'models': info,
              'rows': rows, 'max_abs_error': errors, 'onnxruntime': onnxruntime.__version__,
              'torch': torch.__version__, 'cpu_count': os.cpu_count(), 'code': code_version()}
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


if __name__ == '__main__':
    main()
