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

Inference modes (``--device``): with ``--device cuda`` (or ``cpu``) the script instead times every inference mode of
``ssl_plugin.core.inference`` (eager, channels_last, the RSC fold, bf16 / fp16 autocast, CUDA graphs, torch.compile,
and ``auto`` = ``auto_select``'s pick) for the dense network and each pruned one, on REDS-size clips of 15 frames by
default. Each mode is prepared once per network (copy, fold, convert, compile, capture, warm-up; cuDNN autotuning on
CUDA), checked against that network's eager output, then the networks take turns, one forward each per round, timed
with CUDA events. ``ms_per_frame`` is the median round / frames; ``speedup`` is dense / pruned in the same mode and
``speedup_vs_dense_eager`` is dense fp32 eager / pruned in this mode. Groups run in order of importance (the first
ratio 0.5 in every mode, then the other ratios, torch.compile last), the JSON is rewritten after each group, and a
``--budget-s`` (or SIGINT / SIGTERM) stops it cleanly with the rest listed as skipped. A mode the device lacks (CUDA
graphs on a CPU, ...) is skipped with its reason.

    python benchmarks/speed.py --device cuda --json speed_cuda.json             # every mode, 0.3 / 0.5 / 0.7
    python benchmarks/speed.py --device cuda --ratios 0.5 --modes eager auto    # a quick look
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import signal
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
from ssl_plugin.core.inference import InferenceMode, InferenceRunner, auto_select, time_forward

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests), not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_env import code_version, steal_seconds, write_atomic  # noqa: E402

LAYOUTS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
#: --device's modes, most important first: the default (eager), the likely fastest, auto, then one option at a time.
DEFAULT_MODES = ('eager', 'channels_last+fold+bf16+graph', 'channels_last+fold+graph', 'auto', 'channels_last', 'fold',
                 'channels_last+fold', 'graph', 'channels_last+fold+bf16', 'channels_last+fold+fp16',
                 'channels_last+fold+fp16+graph', 'bf16', 'fp16', 'channels_last+fold+compile',
                 'channels_last+fold+compile+graph')
TARGET_RATIO, TARGET_SAME_MODE, TARGET_VS_EAGER = 0.5, 2.0, 3.0


def mode_name(mode: str) -> str:
    """'auto', or the canonical name of an InferenceMode (ValueError for an unknown option)."""
    return 'auto' if mode.strip() == 'auto' else InferenceMode.parse(mode).name


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--ratios', type=float, nargs='+', default=[0.3, 0.5, 0.7], help='pruning ratios (0, 1)')
    p.add_argument('--arch', choices=['basicvsr', 'basicvsrpp'], default='basicvsr',
                   help="BasicSR's BasicVSR or BasicVSRPlusPlus")
    p.add_argument('--num-feat', type=int, default=64, help='trunk width (num_feat / mid_channels)')
    p.add_argument('--num-block', type=int, default=None,
                   help='residual blocks per branch (num_block / num_blocks; default: 30 BasicVSR, 7 BasicVSR++)')
    p.add_argument('--frames', type=int, default=None, help='frames per clip (default 5; 15 with --device)')
    p.add_argument('--size', type=int, nargs=2, default=[180, 320], metavar=('H', 'W'),
                   help='LR frame size (default: REDS, 180x320)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--scope', choices=['local', 'global'], default='local', help='L1 selection scope (see above)')
    p.add_argument('--align', type=int, default=1, help='round kept counts up to a multiple of this')
    p.add_argument('--weights', choices=['init', 'random'], default='init',
                   help="'init': BasicSR's initialisation; 'random': every prunable conv from N(0, 0.02)")
    p.add_argument('--repeats', type=int, default=None,
                   help='timed rounds (one forward of every model each; default 3, 10 with --device)')
    p.add_argument('--warmup', type=int, default=None,
                   help='untimed forwards per model first (default 1, 2 with --device)')
    p.add_argument('--devices', nargs='+', default=None, help='default: cpu, plus cuda when available')
    p.add_argument('--device', default=None,
                   help='time the inference modes (--modes) on this one device (cuda, cuda:1, cpu) instead of the '
                        'layouts on --devices')
    p.add_argument('--modes', nargs='+', default=None,
                   help='with --device: inference modes to time, in this order of importance (default: '
                        + ' '.join(DEFAULT_MODES) + ')')
    p.add_argument('--budget-s', type=float, default=None,
                   help='with --device: start no group of runs after this many seconds (or when the last group of '
                        'its kind says it would not fit); the rest is listed as skipped')
    p.add_argument('--auto-repeats', type=int, default=3, help="with --device: timed calls per candidate of 'auto'")
    p.add_argument('--summary', type=Path, default=None,
                   help='with --device: also write the table and the targets here (rewritten with the JSON)')
    p.add_argument('--compile-backend', default=None, help="with --device: torch.compile backend (default inductor)")
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
    modes_path = args.device is not None
    if modes_path and args.devices:
        p.error('--device (inference modes on one device) and --devices (layouts on several) exclude each other')
    if not modes_path and (args.modes or args.budget_s is not None or args.summary):
        p.error('--modes, --budget-s and --summary need --device')
    args.frames = args.frames if args.frames is not None else (15 if modes_path else 5)
    args.repeats = args.repeats if args.repeats is not None else (10 if modes_path else 3)
    args.warmup = args.warmup if args.warmup is not None else (2 if modes_path else 1)
    if modes_path:
        args.modes = args.modes or list(DEFAULT_MODES)
        try:
            args.modes = [mode_name(m) for m in args.modes]
        except ValueError as e:
            p.error(f'--modes: {e}')
        if len(set(args.modes)) != len(args.modes):
            p.error(f'--modes names a mode twice: {args.modes}')
        try:
            torch.device(args.device)
        except RuntimeError as e:
            p.error(f'--device {args.device!r}: {e}')
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


# -- inference modes on one device (--device) -----------------------------------------------------------------------


def plan_groups(modes, ratios) -> list[tuple[str, list[float]]]:
    """(mode, ratios) groups in the order they run: the target ratio in every mode first, then the other ratios,
    torch.compile's modes (slow to prepare) after all others, each in the order ``modes`` lists them."""
    key = min(ratios, key=lambda r: abs(r - TARGET_RATIO))
    first, rest = [key], [r for r in ratios if r != key]
    plain = [m for m in modes if m == 'auto' or not InferenceMode.parse(m).compile]
    compiled = [m for m in modes if m not in plain]
    groups = []
    for batch in (plain, compiled):
        groups += [(m, first) for m in batch] + ([(m, rest) for m in batch] if rest else [])
    return groups


def _kind(mode: str) -> str:
    return 'auto' if mode == 'auto' else ('compile' if InferenceMode.parse(mode).compile else 'plain')


class ModeReport:
    """Rows, skipped runs and the environment of a --device run; rewritten (atomically) to ``path`` after each
    change, so a run stopped at any point leaves every finished measurement behind."""

    def __init__(self, args, env: dict):
        self.args, self.env = args, env
        self.rows, self.skipped, self.complete = [], [], False
        self.start = time.perf_counter()

    def skip(self, mode, ratios, reason, nets=('dense', 'pruned')):
        self.skipped.append({'mode': mode, 'ratios': list(ratios), 'nets': list(nets), 'reason': reason})
        self.flush()

    def add(self, rows):
        self.rows += rows
        self.flush()

    def as_dict(self) -> dict:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()}
        return {'config': config, 'code': code_version(), 'env': self.env, 'complete': self.complete,
                'elapsed_s': time.perf_counter() - self.start, 'rows': self.rows, 'skipped': self.skipped,
                'targets': evaluate_targets(self.rows)}

    def flush(self):
        report = self.as_dict()
        if self.args.json:
            write_atomic(self.args.json, json.dumps(report, indent=2))
        if self.args.summary:
            write_atomic(self.args.summary, '\n'.join(format_modes(report)) + '\n')


def evaluate_targets(rows) -> dict:
    """The issue's two targets at ratio 0.5: pruned >= 2x dense in the same mode, and pruned in its best mode >= 3x
    dense fp32 eager. 'Best' is the fastest pruned row whose output matched eager's (reduced precision: finite);
    the best exact (fp32) mode is reported beside it."""
    at = [r for r in rows if abs(r['ratio'] - TARGET_RATIO) < 1e-9 and r['matches_eager']]
    out = {'ratio': TARGET_RATIO, 'evaluated': bool(at)}
    if not at:
        out['reason'] = f'no measured row at ratio {TARGET_RATIO} whose output matched eager'
        return out
    best = min(at, key=lambda r: r['ms_per_frame'])
    exact = [r for r in at if r['exact']]
    best_exact = min(exact, key=lambda r: r['ms_per_frame']) if exact else None
    eager = next((r for r in at if r['mode'] == 'eager'), None)
    out['same_mode'] = {
        'threshold': TARGET_SAME_MODE, 'speedup_per_mode': {r['mode']: r['speedup'] for r in at},
        'met_in_modes': [r['mode'] for r in at if r['speedup'] >= TARGET_SAME_MODE],
        'best_mode': best['mode'], 'speedup_in_best_mode': best['speedup'],
        'met_in_best_mode': best['speedup'] >= TARGET_SAME_MODE,
        'speedup_in_eager': eager['speedup'] if eager else None}
    vs = best['speedup_vs_dense_eager']
    out['vs_dense_eager'] = {
        'threshold': TARGET_VS_EAGER, 'best_mode': best['mode'], 'speedup_vs_dense_eager': vs,
        'met': None if vs is None else vs >= TARGET_VS_EAGER,
        'best_exact_mode': best_exact['mode'] if best_exact else None,
        'best_exact_speedup_vs_dense_eager': best_exact['speedup_vs_dense_eager'] if best_exact else None}
    return out


def _rel_error(y, ref) -> float:
    return float((y.float() - ref.float()).abs().max()) / max(float(ref.abs().max()), 1e-12)


#: Why the run was asked to stop (a signal), or None. Kept beside the KeyboardInterrupt because code in between (a CUDA
#: graph capture's exit, say) may turn that exception into another one.
STOP = {'reason': None}


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT and SIGTERM (``timeout``'s signals) end the run keeping what is measured."""
    def stop(signum, frame):
        STOP['reason'] = f'signal {signum}'
        raise KeyboardInterrupt(STOP['reason'])
    STOP['reason'] = None
    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepare(net, x, mode, args):
    """A runner for ``net`` in ``mode`` (for 'auto': auto_select's pick) and the mode it runs."""
    kwargs = {'warmup': args.warmup, 'clone_output': False}
    if mode == 'auto':
        choice = auto_select(net, x, repeats=args.auto_repeats, **kwargs)
        return choice.runner, choice.mode
    return InferenceRunner(net, x, mode, compile_backend=args.compile_backend, **kwargs), mode


def fresh_compile_caches(n_nets: int) -> None:
    """Forget the previous groups' compiled graphs and allow one compilation per network of this group: every
    pruned width is a new graph of the same forward, and past dynamo's recompile limit it would silently run eager."""
    import torch._dynamo

    torch._dynamo.reset()
    for key in ('recompile_limit', 'cache_size_limit'):
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, max(getattr(torch._dynamo.config, key), 4 * n_nets))


def time_group(mode, ratios, nets, x, refs, args, tolerance):
    """Prepare ``mode`` for the dense net and the pruned ones at ``ratios``, check each against its eager output, then
    time them round-robin. Returns {name: measurement} and {name: reason} for those that could not be prepared."""
    runners, measured, failed = {}, {}, {}
    if mode != 'auto' and InferenceMode.parse(mode).compile:
        fresh_compile_caches(len(ratios) + 1)
    for name in ['dense', *ratios]:
        t0 = time.perf_counter()
        try:
            runner, chosen = prepare(nets[name], x, mode, args)
            with torch.no_grad():
                err = _rel_error(runner(x), refs[name])
        except Exception as e:  # noqa: BLE001  (a mode this device or network cannot run is reported, not fatal)
            if STOP['reason']:
                raise KeyboardInterrupt(STOP['reason']) from e
            failed[name] = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'[:500]
            if name == 'dense':
                return measured, failed
            continue
        exact = InferenceMode.parse(chosen).exact
        measured[name] = {'chosen_mode': chosen, 'exact': exact, 'max_rel_error': err,
                          'matches_eager': bool(math.isfinite(err) and (err <= tolerance or not exact)),
                          'prepare_s': time.perf_counter() - t0, 'times_s': []}
        runners[name] = runner
    for _ in range(args.repeats):
        for name, runner in runners.items():
            measured[name]['times_s'] += time_forward(runner, x, 1)
    return measured, failed


def mode_rows(mode, measured, info, args, eager_ms: dict):
    frames = args.batch * args.frames
    ms = {name: 1e3 * statistics.median(m['times_s']) / frames for name, m in measured.items()}
    d = measured['dense']
    rows = []
    for name, m in measured.items():
        if name == 'dense':
            continue
        rows.append({'device': info['device'], 'device_name': info['device_name'], 'size': list(args.size),
                     'frames': args.frames, 'batch': args.batch, 'ratio': name, 'mode': mode,
                     'ms_per_frame': ms[name], 'dense_ms_per_frame': ms['dense'],
                     'speedup': ms['dense'] / ms[name],
                     'dense_eager_ms_per_frame': eager_ms.get(name),
                     'speedup_vs_dense_eager': eager_ms[name] / ms[name] if name in eager_ms else None,
                     'ms_per_frame_best': 1e3 * min(m['times_s']) / frames,
                     'dense_ms_per_frame_best': 1e3 * min(d['times_s']) / frames,
                     'mac_ratio': info['macs']['dense'] / info['macs'][name],
                     'macs_dense': info['macs']['dense'], 'macs_pruned': info['macs'][name],
                     'params_dense': info['params']['dense'], 'params_pruned': info['params'][name],
                     'chosen_mode': m['chosen_mode'], 'dense_chosen_mode': d['chosen_mode'], 'exact': m['exact'],
                     'max_rel_error': m['max_rel_error'], 'dense_max_rel_error': d['max_rel_error'],
                     'matches_eager': m['matches_eager'] and d['matches_eager'],
                     'prepare_s': m['prepare_s'], 'dense_prepare_s': d['prepare_s'],
                     'times_s': m['times_s'], 'times_dense_s': d['times_s']})
    return rows


def _estimate(kind, n_nets, history) -> float | None:
    """Seconds a group of ``n_nets`` networks of this kind would take, from the groups that ran (None: no idea)."""
    same = [s for k, s in history if k == kind]
    if same:
        return max(same) * n_nets
    plain = [s for k, s in history if k == 'plain']
    factor = {'plain': 1, 'auto': 4, 'compile': 3}[kind]
    return max(plain) * n_nets * factor if plain else None


def run_modes(args) -> dict:
    """Every (mode, ratios) group of plan_groups on ``args.device``; returns the report (also written to --json)."""
    device = torch.device(args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit(f'--device {args.device}: torch.cuda.is_available() is False (torch {torch.__version__}, '
                             f'built for CUDA {torch.version.cuda})')
        torch.backends.cudnn.benchmark = True  # fixed shapes: each conv gets cuDNN's fastest kernel in warm-up
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu x{torch.get_num_threads()}'
    env = {'device': args.device, 'device_name': name, 'torch': torch.__version__, 'cuda': torch.version.cuda,
           'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           'cudnn_allow_tf32': torch.backends.cudnn.allow_tf32,
           'matmul_precision': torch.get_float32_matmul_precision(), 'python': sys.version.split()[0]}
    tf32 = device.type == 'cuda' and torch.backends.cudnn.allow_tf32
    tolerance = 1e-2 if tf32 else 1e-4  # as auto_select: TF32 kernels of different layouts round differently
    report = ModeReport(args, env)
    rows_total = len(plan_groups(args.modes, args.ratios))
    print(f'BasicVSR num_feat={args.num_feat} num_block={args.num_block}, input {args.batch}x{args.frames}x3x'
          f'{args.size[0]}x{args.size[1]} on {name}, torch {torch.__version__}, {len(args.modes)} modes x '
          f'{len(args.ratios)} ratios in {rows_total} groups, {args.repeats} rounds (+{args.warmup} warm-up)',
          flush=True)
    with _stop_on_signals():
        try:
            dense = build_dense(args)
            nets = {'dense': dense, **{r: pruned_copy(dense, r, args) for r in args.ratios}}
            x = torch.rand(args.batch, args.frames, 3, *args.size,
                           generator=torch.Generator().manual_seed(args.seed)).to(device)
            refs, macs = {}, {}
            for key, net in nets.items():  # eager reference outputs and MACs, on the device
                eager = InferenceRunner(net, x, 'eager', warmup=0)
                with torch.inference_mode():
                    refs[key] = eager(x)
                    macs[key] = count_macs(eager.net, x)
                del eager
            info = {'device': args.device, 'device_name': name, 'macs': macs,
                    'params': {k: count_params(n) for k, n in nets.items()}}
            run_groups(report, args, nets, x, refs, info, tolerance)
            report.complete = True
        except KeyboardInterrupt as e:
            why = str(e) or 'KeyboardInterrupt'
            done = {(r['mode'], r['ratio']) for r in report.rows} | {
                (s['mode'], r) for s in report.skipped for r in s['ratios']}
            for mode, ratios in plan_groups(args.modes, args.ratios):
                left = [r for r in ratios if (mode, r) not in done]
                if left:
                    report.skipped.append({'mode': mode, 'ratios': left, 'nets': ['dense', 'pruned'],
                                           'reason': f'interrupted ({why}) before it finished'})
            print(f'interrupted ({why}): writing what was measured', flush=True)
        report.flush()
    result = report.as_dict()
    print('\n'.join(format_modes(result)))
    for path in (args.json, args.summary):
        if path:
            print(f'wrote {path}')
    return result


def run_groups(report, args, nets, x, refs, info, tolerance):
    # Dense fp32 eager per ratio, from the eager group that timed that ratio (a group measures its own dense).
    history, eager_ms = [], {}
    for mode, ratios in plan_groups(args.modes, args.ratios):
        kind, n_nets = _kind(mode), 1 + len(ratios)
        elapsed = time.perf_counter() - report.start
        if args.budget_s is not None:
            est = _estimate(kind, n_nets, history)
            if elapsed >= args.budget_s or (est is not None and elapsed + est > args.budget_s):
                report.skip(mode, ratios, f'time budget: {elapsed:.0f} s of --budget-s {args.budget_s:g} spent'
                            + (f', this group would take ~{est:.0f} s' if est is not None else ''))
                print(f'-- {mode} @ {ratios}: skipped (time budget)', flush=True)
                continue
        t0 = time.perf_counter()
        measured, failed = time_group(mode, ratios, nets, x, refs, args, tolerance)
        if args.device.startswith('cuda'):
            torch.cuda.empty_cache()
        wall = time.perf_counter() - t0
        history.append((kind, wall / n_nets))
        if 'dense' in failed:
            report.skip(mode, ratios, f'dense: {failed["dense"]}')
            print(f'-- {mode} @ {ratios}: skipped ({failed["dense"]})', flush=True)
            continue
        for r, reason in failed.items():
            report.skip(mode, [r], f'pruned {r}: {reason}', nets=['pruned'])
        if mode == 'eager':
            dense_ms = 1e3 * statistics.median(measured['dense']['times_s']) / (args.batch * args.frames)
            eager_ms.update({r: dense_ms for r in ratios if r not in eager_ms})
            for row in report.rows:  # rows of modes that ran before eager in this group's ratios
                if row['speedup_vs_dense_eager'] is None and row['ratio'] in eager_ms:
                    row['dense_eager_ms_per_frame'] = eager_ms[row['ratio']]
                    row['speedup_vs_dense_eager'] = eager_ms[row['ratio']] / row['ms_per_frame']
        rows = mode_rows(mode, measured, info, args, eager_ms)
        report.add(rows)
        for row in rows:
            print(f'-- {mode} @ {row["ratio"]}: dense {row["dense_ms_per_frame"]:.2f} ms/frame, pruned '
                  f'{row["ms_per_frame"]:.2f} ({row["speedup"]:.2f}x; {wall:.0f} s)', flush=True)


def format_modes(report: dict) -> list[str]:
    """The table of a --device report (rows sorted by ratio, then speed), its skipped runs and the two targets."""
    env, lines = report['env'], []
    lines.append(f"{len(report['rows'])} rows, {len(report['skipped'])} skipped, complete: {report['complete']}, "
                 f"{report['elapsed_s']:.0f} s; {env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}, "
                 f"cuDNN {env['cudnn']} (TF32 {env['cudnn_allow_tf32']})")
    header = (f'{"mode":<36}{"ratio":>6}{"dense ms/f":>12}{"pruned ms/f":>13}{"speedup":>9}{"vs eager":>10}'
              f'{"MAC ratio":>11}{"max err":>10}  auto pick')
    lines += [header, '-' * len(header)]
    for r in sorted(report['rows'], key=lambda r: (r['ratio'], r['ms_per_frame'])):
        vs = f'{r["speedup_vs_dense_eager"]:.2f}' if r['speedup_vs_dense_eager'] else '-'
        pick = f'{r["dense_chosen_mode"]} / {r["chosen_mode"]}' if r['mode'] == 'auto' else ''
        flag = '' if r['matches_eager'] else ' (differs from eager)'
        lines.append(f'{r["mode"]:<36}{r["ratio"]:>6.2f}{r["dense_ms_per_frame"]:>12.2f}{r["ms_per_frame"]:>13.2f}'
                     f'{r["speedup"]:>9.2f}{vs:>10}{r["mac_ratio"]:>11.2f}{r["max_rel_error"]:>10.1e}  {pick}{flag}')
    lines.append('ms/f: median round / frames; speedup: dense / pruned in the same mode; vs eager: dense fp32 eager / '
                 'pruned; max err: max |pruned - its eager| / max |its eager|; auto pick: dense / pruned')
    lines += [f'skipped {s["mode"]} @ {s["ratios"]}: {s["reason"]}' for s in report['skipped']]
    t = report['targets']
    if not t['evaluated']:
        lines.append(f'targets at ratio {TARGET_RATIO}: not evaluated ({t["reason"]})')
        return lines
    sm, ve = t['same_mode'], t['vs_dense_eager']
    lines.append(f'target 1 (ratio {TARGET_RATIO}, pruned >= {TARGET_SAME_MODE:g}x dense in the same mode): '
                 f'{"MET" if sm["met_in_best_mode"] else "NOT MET"} in the best mode {sm["best_mode"]} '
                 f'({sm["speedup_in_best_mode"]:.2f}x); met in {sm["met_in_modes"] or "no mode"}')
    vs = ve['speedup_vs_dense_eager']
    lines.append(f'target 2 (ratio {TARGET_RATIO}, pruned best mode >= {TARGET_VS_EAGER:g}x dense fp32 eager): '
                 + ('not evaluated (eager not measured)' if vs is None else
                    f'{"MET" if ve["met"] else "NOT MET"}: {ve["best_mode"]} {vs:.2f}x'
                    + (f'; best exact mode {ve["best_exact_mode"]} {ve["best_exact_speedup_vs_dense_eager"]:.2f}x'
                       if ve['best_exact_speedup_vs_dense_eager'] else '')))
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.device is not None:
        return run_modes(args)
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
