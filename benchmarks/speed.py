"""Speed of dense vs SSL-pruned BasicVSR / BasicVSR++: does the MAC cut turn into wall-clock speedup?

Builds BasicSR's BasicVSR (default 64 channels, 30 blocks per branch, as in the paper) or, with ``--arch basicvsrpp``,
BasicSR's BasicVSR++ (default 64 channels, 7 blocks per propagation branch, as released; with its deformable alignment
also without CUDA, which BasicSR would leave out: the alignment runs on torchvision's CPU kernel), prunes copies of it
at several ratios with the engine (L1 selection, RSC residual blocks, pixel-shuffle group cuts) and times dense and
pruned forwards in one run, interleaved round-robin so that a change in machine load hits every model alike. Reports
params, MACs (torch's FLOP counter), the MAC ratio dense/pruned, the best and median time of each, and two speed-ups:
``speedup`` = best dense time / best pruned time, and ``speedup_median_round`` = the median over rounds of dense time
/ pruned time in that round; each also divided by the MAC ratio (1.0 = the pruned network is as fast as its MAC count
promises).

Why the best round is the headline: on a shared machine interference only ever adds time (as ``timeit`` puts it, the
lowest time is what the machine can do; higher ones are other processes), and it skews a ratio: a neighbour's burst of
a few seconds adds the same seconds to whichever forward it hits, which is a larger fraction of the pruned forward
(~3x shorter) than of the dense one, so disturbed rounds pull a per-round median down. Each forward's CPU steal time
(Linux ``/proc/stat``: time the hypervisor ran other guests) is recorded beside its time, so disturbed rounds can be
seen in the JSON.

Defaults follow the paper's inference setting as far as a CPU allows: REDS-size LR frames (180x320), batch 1, and both
memory layouts, because on CPU ``channels_last`` is the faster layout for the dense network too (oneDNN computes in
channel blocks; NCHW tensors are reordered around every conv) and a deployment would use it. A quicker look:
``--size 64 64``. Each (device, layout) pair is timed in its own rounds and reported against its own dense baseline.

Memory: glibc returns freed blocks above 32 MiB (and the top of its heap) to the kernel, so every forward at REDS size
page-faults its large tensors in again (the HR tensors alone are 236 MB per frame in the dense net); that kernel time
grows with tensor bytes, not MACs, and was ~20 % of this benchmark's wall time. ``--malloc keep`` tells glibc (via
``mallopt``) to keep freed memory for reuse, as the caching allocators of tcmalloc / jemalloc or CUDA do; the default
``system`` leaves the allocator alone. The setting is recorded in the JSON.

Selection: BasicSR initialises residual convs x0.1, so on a randomly initialised network *global* L1 selection would
remove residual-block units first and almost nothing else; that is not what a trained network looks like. The default
is therefore ``--scope local`` (the same fraction of every layer); ``--weights random`` redraws every prunable conv
from one distribution so that ``--scope global`` is meaningful as well.

    python benchmarks/speed.py                       # CPU (+ CUDA when present), ratios 0.3 0.5 0.7, both layouts
    python benchmarks/speed.py --json speed.json     # also write the rows as JSON
    python benchmarks/speed.py --breakdown           # also time and count each top-level part (SPyNet, trunks, ...)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

try:
    import ssl_plugin  # noqa: F401  (applies the host compatibility shims before basicsr is imported)
except ImportError:  # run from a checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ssl_plugin  # noqa: F401

from ssl_plugin.core import count_macs, count_params, describe, l1_scores, prune, select_unimportant

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests), not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_env import code_version, steal_seconds, write_atomic  # noqa: E402

LAYOUTS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--ratios', type=float, nargs='+', default=[0.3, 0.5, 0.7], help='pruning ratios (0, 1)')
    p.add_argument('--arch', choices=['basicvsr', 'basicvsrpp'], default='basicvsr',
                   help="BasicSR's BasicVSR or BasicVSRPlusPlus")
    p.add_argument('--num-feat', type=int, default=64, help='trunk width (num_feat / mid_channels)')
    p.add_argument('--num-block', type=int, default=None,
                   help='residual blocks per branch (num_block / num_blocks; default: 30 BasicVSR, 7 BasicVSR++)')
    p.add_argument('--frames', type=int, default=5, help='frames per clip')
    p.add_argument('--size', type=int, nargs=2, default=[180, 320], metavar=('H', 'W'),
                   help='LR frame size (default: REDS, 180x320)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--scope', choices=['local', 'global'], default='local', help='L1 selection scope (see above)')
    p.add_argument('--align', type=int, default=1, help='round kept counts up to a multiple of this')
    p.add_argument('--weights', choices=['init', 'random'], default='init',
                   help="'init': BasicSR's initialisation; 'random': every prunable conv from N(0, 0.02)")
    p.add_argument('--repeats', type=int, default=3,
                   help='timed rounds (one forward of every model each)')
    p.add_argument('--warmup', type=int, default=1, help='untimed forwards per model first')
    p.add_argument('--devices', nargs='+', default=None, help='default: cpu, plus cuda when available')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: every usable core)')
    p.add_argument('--layouts', nargs='+', choices=list(LAYOUTS), default=list(LAYOUTS),
                   help='memory layouts to time (default: both)')
    p.add_argument('--profile', action='store_true',
                   help='also print where the time goes (torch.profiler, per op) for dense and each pruned net')
    p.add_argument('--malloc', choices=['system', 'keep'], default='system',
                   help="'keep': glibc keeps freed memory for reuse instead of unmapping it (see above)")
    p.add_argument('--breakdown', action='store_true',
                   help='also time (timers on the top-level children during the timed rounds; on CUDA each one '
                        'synchronises) and count MACs of each part of the network, dense vs each pruned net')
    p.add_argument('--json', type=Path, default=None, help='write the rows (ratio, mac_ratio, speedup, ...) here')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if args.num_block is None:
        args.num_block = 30 if args.arch == 'basicvsr' else 7
    if not all(0 < r < 1 for r in args.ratios):
        p.error(f'--ratios must lie in (0, 1), got {args.ratios}')
    if args.repeats < 1 or args.warmup < 0 or args.frames < 2:
        p.error('need --repeats >= 1, --warmup >= 0 and --frames >= 2 (BasicVSR computes flow between frames)')
    return args


def build_dense(args) -> torch.nn.Module:
    from basicsr.utils.registry import ARCH_REGISTRY

    torch.manual_seed(args.seed)
    if args.arch == 'basicvsr':
        net = ARCH_REGISTRY.get('BasicVSR')(num_feat=args.num_feat, num_block=args.num_block)
    else:
        from unittest import mock

        # BasicSR adds the deformable alignment only if CUDA is available at construction; measure the real network.
        with mock.patch('torch.cuda.is_available', return_value=True):
            net = ARCH_REGISTRY.get('BasicVSRPlusPlus')(mid_channels=args.num_feat, num_blocks=args.num_block)
        assert net.is_with_alignment
    if args.weights == 'random':
        topo = describe(net)
        with torch.no_grad():
            for key in topo.keys():
                if not key.endswith('@in'):
                    net.get_submodule(key).weight.normal_(0, 0.02)
    return net.eval()


def pruned_copy(dense, ratio, args):
    net = copy.deepcopy(dense)
    topo = describe(net)
    prune(net, select_unimportant(l1_scores(net, topo), ratio, args.scope, args.align), topo)
    return net.eval()


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class Timings(NamedTuple):
    """Per model: seconds of each timed forward, seconds per top-level part per forward (with ``parts``), and CPU steal
    seconds during each forward (None where the kernel does not report steal)."""
    times: dict
    part_times: dict
    steal: dict


def time_models(models: dict, x, device, repeats, warmup, parts=False) -> Timings:
    """Time ``repeats`` forwards of every model; models take turns (one round = one forward of each), so a change in
    machine speed hits every model of a round alike. With ``parts``, timers on the top-level children also record the
    seconds of each part per forward ('rest' is the forward's own ops: flow warping, concatenation, ...)."""
    timings = Timings(*({name: [] for name in models} for _ in range(3)))
    timers = {name: PartTimer(net, device) for name, net in models.items()} if parts else {}
    try:
        with torch.inference_mode():
            for rep in range(warmup + repeats):
                for name, net in models.items():
                    if parts:
                        timers[name].seconds.clear()
                    _sync(device)
                    steal0, start = steal_seconds(), time.perf_counter()
                    net(x)
                    _sync(device)
                    elapsed, steal1 = time.perf_counter() - start, steal_seconds()
                    if rep < warmup:
                        continue
                    timings.times[name].append(elapsed)
                    timings.steal[name].append(None if steal0 is None or steal1 is None else steal1 - steal0)
                    if parts:
                        seconds = dict(timers[name].seconds)
                        seconds['rest'] = elapsed - sum(seconds.values())
                        timings.part_times[name].append(seconds)
    finally:
        for timer in timers.values():
            timer.remove()
    return timings


def parts_of(net) -> list[tuple[str, str, torch.nn.Module]]:
    """(part, module path, module) of the parts a breakdown reports: the top-level children, except that a ModuleDict
    (never called itself, e.g. BasicVSR++'s ``backbone`` and ``deform_align``) counts as one part made of its
    children."""
    out = []
    for name, child in net.named_children():
        if isinstance(child, torch.nn.ModuleDict):
            out += [(name, f'{name}.{sub}', module) for sub, module in child.named_children()]
        else:
            out.append((name, name, child))
    return out


class PartTimer:
    """Wall time spent in each part of a network (:func:`parts_of`; accumulated over its calls in one forward)."""

    def __init__(self, net, device):
        self.seconds, self.handles, self.device = {}, [], device
        for name, _, child in parts_of(net):
            self.handles += [child.register_forward_pre_hook(self._start),
                             child.register_forward_hook(lambda mod, inp, out, key=name: self._stop(mod, key))]

    def _start(self, mod, inp):
        _sync(self.device)
        mod._speed_t0 = time.perf_counter()

    def _stop(self, mod, key):
        _sync(self.device)
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - mod._speed_t0

    def remove(self):
        for h in self.handles:
            h.remove()


def profile_ops(models: dict, x, device, top=10) -> None:
    """Self time per op of one forward of each model: convs vs RSC gather (index_select) / scatter (index_add) vs
    the width-independent rest (flow warping, activations, pixel shuffle)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    key = 'self_device_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    for name, net in models.items():
        with torch.inference_mode(), profile(activities=acts) as prof:
            net(x)
            _sync(device)
        events = [e for e in prof.key_averages() if getattr(e, key) > 0]
        total = sum(getattr(e, key) for e in events)
        print(f'-- {device.type} {"dense" if name == "dense" else f"pruned {name}"}: {total / 1e3:.1f} ms of op time')
        for e in sorted(events, key=lambda e: -getattr(e, key))[:top]:
            print(f'   {e.key:<40}{getattr(e, key) / 1e3:>10.1f} ms {100 * getattr(e, key) / total:>6.1f}%'
                  f'{e.count:>7} calls')


def part_macs(net, x) -> dict:
    """MACs of each part (:func:`parts_of`) over one forward (torch's FLOP counter, 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    prefix = type(net).__name__ + '.'
    counts = {k[len(prefix):]: sum(v.values()) // 2 for k, v in counter.get_flop_counts().items()
              if k.startswith(prefix)}
    out: dict = {}
    for name, path, _ in parts_of(net):
        out[name] = out.get(name, 0) + counts.get(path, 0)
    return out


def breakdown(part_times: dict, part_mac_counts: dict) -> dict:
    """Median seconds (over the timed rounds) and MACs per part, per model."""
    out = {}
    for name, rounds in part_times.items():
        keys = rounds[0].keys()
        out[name] = {k: {'s': statistics.median(r.get(k, 0.0) for r in rounds),
                         'macs': part_mac_counts[name].get(k, 0)} for k in keys}
    return out


def print_breakdown(parts: dict, label: str) -> None:
    dense = parts['dense']
    for name, pr in parts.items():
        if name == 'dense':
            continue
        print(f'-- {label}, pruned {name}: per part, median over the timed rounds (dense -> pruned)')
        print(f'   {"part":<16}{"dense ms":>10}{"pruned ms":>11}{"speed-up":>10}{"MAC ratio":>11}'
              f'{"share of pruned":>17}')
        total = sum(v['s'] for v in pr.values())
        for part in sorted(dense, key=lambda k: -dense[k]['s']):
            d, q = dense[part], pr[part]
            mr = f'{d["macs"] / q["macs"]:.2f}' if q['macs'] else '-'
            print(f'   {part:<16}{d["s"] * 1e3:>10.1f}{q["s"] * 1e3:>11.1f}{d["s"] / q["s"]:>10.2f}{mr:>11}'
                  f'{100 * q["s"] / total:>16.1f}%')


def steal_share(row: dict) -> str:
    """CPU steal during a row's timed forwards as a share of the machine's CPU time over them ('-' where not
    reported)."""
    steal = row['steal_dense_s'] + row['steal_pruned_s']
    if any(s is None for s in steal):
        return '-'
    wall = sum(row['times_dense_s']) + sum(row['times_pruned_s'])
    return f'{100 * sum(steal) / (wall * (os.cpu_count() or 1)):.1f}'


def keep_freed_memory() -> None:
    """Stop glibc from unmapping freed large blocks and trimming its heap (M_MMAP_MAX = 0, M_TRIM_THRESHOLD = max)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library('c')
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, 'mallopt'):
        raise SystemExit('--malloc keep needs glibc (mallopt); use --malloc system, or preload tcmalloc / jemalloc')
    m_trim_threshold, m_mmap_max = -1, -4
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2 ** 31 - 1)):
        raise SystemExit('mallopt refused the --malloc keep settings')


def main(argv=None):
    args = parse_args(argv)
    if args.malloc == 'keep':
        keep_freed_memory()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    devices = args.devices or (['cpu'] + (['cuda'] if torch.cuda.is_available() else []))

    dense = build_dense(args)
    nets = {'dense': dense, **{r: pruned_copy(dense, r, args) for r in args.ratios}}
    x_cpu = torch.rand(args.batch, args.frames, 3, *args.size, generator=torch.Generator().manual_seed(args.seed))
    params = {name: count_params(net) for name, net in nets.items()}
    macs = {name: count_macs(net, x_cpu) for name, net in nets.items()}
    part_mac_counts = {name: part_macs(net, x_cpu) for name, net in nets.items()} if args.breakdown else {}

    print(f'{type(dense).__name__} num_feat={args.num_feat} num_block={args.num_block}, input {tuple(x_cpu.shape)}, '
          f'scope={args.scope} align={args.align} weights={args.weights}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} CPU threads, malloc {args.malloc}, {args.repeats} rounds '
          f'(+{args.warmup} warm-up)')
    rows = []
    for dev in devices:
        device = torch.device(dev)
        name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu x{torch.get_num_threads()}'
        x = x_cpu.to(device)
        if device.type == 'cuda':
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernel per conv
        for layout in args.layouts:
            models = {k: net.to(device=device, memory_format=LAYOUTS[layout]) for k, net in nets.items()}
            timings = time_models(models, x, device, args.repeats, args.warmup, parts=args.breakdown)
            t = timings.times
            if args.breakdown:
                print_breakdown(breakdown(timings.part_times, part_mac_counts), f'{name} {layout}')
            if args.profile:
                profile_ops(models, x, device)
            for r in args.ratios:
                mac_ratio = macs['dense'] / macs[r]
                speedup = min(t['dense']) / min(t[r])
                median_round = statistics.median(d / q for d, q in zip(t['dense'], t[r]))
                rows.append({'device': dev, 'device_name': name, 'layout': layout, 'ratio': r,
                             'params_dense': params['dense'], 'params_pruned': params[r], 'macs_dense': macs['dense'],
                             'macs_pruned': macs[r], 'mac_ratio': mac_ratio,
                             'best_dense_s': min(t['dense']), 'best_pruned_s': min(t[r]),
                             'time_dense_s': statistics.median(t['dense']), 'time_pruned_s': statistics.median(t[r]),
                             'speedup': speedup, 'speedup_per_mac_ratio': speedup / mac_ratio,
                             'speedup_median_round': median_round,
                             'speedup_median_round_per_mac_ratio': median_round / mac_ratio,
                             'times_dense_s': t['dense'], 'times_pruned_s': t[r],
                             'steal_dense_s': timings.steal['dense'], 'steal_pruned_s': timings.steal[r]})
        for net in nets.values():
            net.to(device='cpu', memory_format=torch.contiguous_format)

    header = (f'{"device":<14}{"layout":<14}{"ratio":>6}{"params":>18}{"GMACs":>16}{"mac_ratio":>10}{"dense s":>9}'
              f'{"pruned s":>10}{"speedup":>9}{"/mac":>6}{"median round":>14}{"/mac":>6}{"steal %":>9}')
    print(header)
    print('-' * len(header))
    for row in rows:
        print(f'{row["device_name"]:<14}{row["layout"]:<14}{row["ratio"]:>6.2f}'
              f'{row["params_dense"] / 1e6:>8.2f}M->{row["params_pruned"] / 1e6:>6.2f}M'
              f'{row["macs_dense"] / 1e9:>7.1f}->{row["macs_pruned"] / 1e9:>6.1f}{row["mac_ratio"]:>10.2f}'
              f'{row["best_dense_s"]:>9.2f}{row["best_pruned_s"]:>10.2f}{row["speedup"]:>9.2f}'
              f'{row["speedup_per_mac_ratio"]:>6.2f}{row["speedup_median_round"]:>14.2f}'
              f'{row["speedup_median_round_per_mac_ratio"]:>6.2f}{steal_share(row):>9}')
    print('dense s / pruned s: best round; speedup = their ratio; median round = median of per-round ratios; '
          'steal %: CPU steal during the timed forwards / (their wall time x CPUs)')
    if args.json:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        write_atomic(args.json, json.dumps({'config': config, 'code': code_version(), 'rows': rows}, indent=2))
        print(f'wrote {args.json}')
    return rows


if __name__ == '__main__':
    main()
