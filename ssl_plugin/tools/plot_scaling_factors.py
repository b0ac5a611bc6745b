"""Plot how the scaling factors γ of pruned and kept units evolve during the sparsity stage (the paper's
supplementary Fig. 1: the pruned units' γ fall as the penalty α grows, the kept units' γ stay or rise on their own).

Reads what a run logged, nothing else:

* a BasicSR run (``ssl_plugin/train.py``) with ``logger.ssl_per_layer: true``: its tensorboard events
  (``tb_logger/<name>``, full precision) or, without them, its log file ``experiments/<name>/train_<name>_*.log``
  (values printed every ``logger.print_freq`` iterations). Names: ``ssl_alpha``, ``ssl_gamma_pruned/<key>``,
  ``ssl_gamma_kept/<key>``.
* an mmengine work_dir of an MMagic run with ``SSLPruningHook``: ``<timestamp>/vis_data/scalars.json``
  (``ssl/alpha``, ``ssl/gamma_pruned/<key>``, ``ssl/gamma_kept/<key>``).

Writes one PNG per chosen layer (mean |γ| of pruned vs kept units against the iteration, α on a second axis), an
overview PNG of all chosen layers and ``scaling_factors.csv`` with exactly the plotted numbers.

    python -m ssl_plugin.tools.plot_scaling_factors experiments/<name> [--layers '*conv_hr' 'upconv*'] [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import re
from collections import defaultdict
from pathlib import Path

PRUNED, KEPT, ALPHA = 'gamma_pruned/', 'gamma_kept/', 'alpha'
#: Prefixes the hosts put in front of the plugin's names (BasicSR's log dict, mmengine's visualizer).
HOST_PREFIXES = ('ssl_', 'ssl/')
#: Name fragments of the pixel-shuffle (upsampling) convs of the supported networks (BasicSR / MMagic naming).
UPSAMPLING = ('upconv', 'upsample')
_BLOCK = re.compile(r'^(?P<branch>.*)\.(?P<index>\d+)\.(?P<conv>conv[12])$')
_LOG_ITER = re.compile(r'iter:\s*([\d,]+)')
_LOG_VALUE = re.compile(r'(\S+): ([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))(?=\s|$)')


class NoScalingFactors(ValueError):
    """The run logged no per-layer γ: the message says which option to set."""


# ----------------------------------------------------------------------------------------------------- reading
def _normalise(name: str) -> str | None:
    """The plugin's part of a logged name ('alpha', 'gamma_pruned/<key>', 'gamma_kept/<key>'), else None."""
    for prefix in HOST_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if rest == ALPHA or rest.startswith((PRUNED, KEPT)):
                return rest
    return None


def _put(series: dict, step: int, name: str, value: float) -> None:
    key = _normalise(name)
    if key is not None:
        series[key][int(step)] = float(value)


def read_tensorboard(folder: Path) -> dict[str, dict[int, float]]:
    """Scalars of all event files in ``folder`` (a resumed run appends files; later values win)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = defaultdict(dict)
    for events in sorted(folder.glob('events.out.tfevents.*'), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(events), size_guidance={'scalars': 0}).Reload()
        for tag in acc.Tags().get('scalars', []):
            for event in acc.Scalars(tag):
                _put(series, event.step, tag, event.value)
    return series


def read_basicsr_log(folder: Path) -> dict[str, dict[int, float]]:
    """The values BasicSR's MessageLogger printed into ``train_<name>_*.log`` (oldest file first)."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for log in sorted(folder.glob('train_*.log'), key=lambda p: p.stat().st_mtime):
        for line in log.read_text(errors='replace').splitlines():
            m = _LOG_ITER.search(line)
            if not m or 'ssl_' not in line:
                continue
            step = int(m.group(1).replace(',', ''))
            values = line[m.end():].split(']', 2)[-1]  # after "...)] [eta: ..., time (data): ...]"
            for name, value in _LOG_VALUE.findall(values):
                _put(series, step, name, float(value))
    return series


def read_mmengine(folder: Path) -> dict[str, dict[int, float]]:
    """``vis_data/scalars.json`` lines of an mmengine work_dir (every timestamped run in it, oldest first)."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    files = sorted(set(folder.glob('*/vis_data/scalars.json')) | set(folder.glob('vis_data/scalars.json')),
                   key=lambda p: p.stat().st_mtime)
    for path in files:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            step = record.get('step', record.get('iter'))
            if step is None:
                continue
            for name, value in record.items():
                if isinstance(value, (int, float)):
                    _put(series, step, name, value)
    return series


def read_run(run_dir: str | os.PathLike) -> tuple[dict[str, dict[int, float]], str]:
    """Every logged SSL series of a run, and a description of where it came from."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f'{run} is not a folder (give a BasicSR experiments/<name> or tb_logger/<name> '
                                'folder, or an mmengine work_dir)')
    tb_candidates = [run, run.parent.parent / 'tb_logger' / run.name]
    sources = []
    for folder in tb_candidates:
        if any(folder.glob('events.out.tfevents.*')):
            try:
                sources.append((read_tensorboard(folder), f'tensorboard events in {folder}'))
            except ImportError:
                pass
            break
    if any(run.glob('train_*.log')):
        sources.append((read_basicsr_log(run), f'BasicSR log {run}/train_*.log'))
    if any(run.glob('*/vis_data/scalars.json')) or (run / 'vis_data' / 'scalars.json').exists():
        sources.append((read_mmengine(run), f'mmengine scalars in {run}'))
    if not sources:
        raise FileNotFoundError(f'{run}: found no tensorboard events, BasicSR train_*.log or mmengine '
                                'vis_data/scalars.json')
    for series, where in sources:
        if _layer_keys(series):
            return series, where
    return sources[0]


def _layer_keys(series) -> list[str]:
    """Layers with logged γ (a layer without pruned units logs only the kept side)."""
    keys = {n[len(PRUNED):] for n in series if n.startswith(PRUNED)}
    keys |= {n[len(KEPT):] for n in series if n.startswith(KEPT)}
    return sorted(keys)


# ----------------------------------------------------------------------------------------------------- choosing
def default_layers(keys: list[str]) -> list[str]:
    """The paper's choice: conv1 and conv2 of the middle residual block of every branch, and the upsampling convs."""
    branches: dict[str, set[int]] = defaultdict(set)
    for key in keys:
        m = _BLOCK.match(key)
        if m:
            branches[m['branch']].add(int(m['index']))
    chosen = []
    for branch in sorted(branches):
        indices = sorted(branches[branch])
        middle = indices[len(indices) // 2]
        chosen += [k for k in (f'{branch}.{middle}.conv1', f'{branch}.{middle}.conv2') if k in keys]
    chosen += [k for k in keys if any(u in k for u in UPSAMPLING) and not k.endswith('@in')]
    return chosen


def choose_layers(keys: list[str], patterns: list[str] | None) -> list[str]:
    if not patterns:
        return default_layers(keys)
    chosen = []
    for pattern in patterns:
        hits = [k for k in keys if fnmatch.fnmatchcase(k, pattern)]
        if not hits:
            raise ValueError(f'--layers {pattern!r} matches none of the logged layers: {keys}')
        chosen += [k for k in hits if k not in chosen]
    return chosen


# ----------------------------------------------------------------------------------------------------- plotting
def layer_rows(series, layers: list[str]) -> list[dict]:
    """The plotted numbers: one row per (layer, logged iteration) with α at that iteration (NaN where a side of a
    layer has no units)."""
    alpha = series.get(ALPHA, {})
    rows = []
    for key in layers:
        pruned, kept = series.get(PRUNED + key, {}), series.get(KEPT + key, {})
        for step in sorted(set(pruned) | set(kept)):
            rows.append({'layer': key, 'iter': step, 'alpha': alpha.get(step, math.nan),
                         'gamma_pruned': pruned.get(step, math.nan), 'gamma_kept': kept.get(step, math.nan)})
    return rows


def _safe_name(key: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', key)


def _draw(ax, rows: list[dict], key: str, legend: bool):
    steps = [r['iter'] for r in rows]
    ax.plot(steps, [r['gamma_pruned'] for r in rows], color='tab:red', label='mean |γ|, pruned units')
    ax.plot(steps, [r['gamma_kept'] for r in rows], color='tab:blue', label='mean |γ|, kept units')
    ax.set_xlabel('iteration')
    ax.set_ylabel('mean |γ|')
    ax.set_title(key, fontsize=9)
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    alpha = [(r['iter'], r['alpha']) for r in rows if not math.isnan(r['alpha'])]
    if alpha:
        twin.plot(*zip(*alpha), color='0.4', linestyle='--', label='α (penalty on pruned γ)')
    twin.set_ylabel('α')
    twin.set_ylim(bottom=0)
    if legend:
        lines = ax.get_lines() + twin.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], fontsize=7, loc='center right')


def plot(series, layers: list[str], out: Path, title: str = '') -> dict:
    """Write ``<layer>.png`` per layer, ``overview.png`` and ``scaling_factors.csv`` into ``out``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rows = layer_rows(series, layers)
    by_layer = {key: [r for r in rows if r['layer'] == key] for key in layers}
    files = {}
    for key, layer in by_layer.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        _draw(ax, layer, key, legend=True)
        fig.tight_layout()
        files[key] = out / f'{_safe_name(key)}.png'
        fig.savefig(files[key], dpi=110)
        plt.close(fig)
    cols = min(3, len(layers))
    nrows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for i, (key, layer) in enumerate(by_layer.items()):
        _draw(axes[i // cols][i % cols], layer, key, legend=(i == 0))
    for j in range(len(layers), nrows * cols):
        axes[j // cols][j % cols].axis('off')
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    overview = out / 'overview.png'
    fig.savefig(overview, dpi=90)
    plt.close(fig)
    table = out / 'scaling_factors.csv'
    with open(table, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['layer', 'iter', 'alpha', 'gamma_pruned', 'gamma_kept'])
        writer.writeheader()
        writer.writerows(rows)
    return {'layers': files, 'overview': overview, 'csv': table}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog='python -m ssl_plugin.tools.plot_scaling_factors',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('run_dir', help='BasicSR experiments/<name> (or tb_logger/<name>), or an mmengine work_dir')
    parser.add_argument('--layers', nargs='+', metavar='GLOB',
                        help='layers (scaling-factor keys, fnmatch globs) to plot; default: conv1/conv2 of the middle '
                             'residual block of each branch and the upsampling convs')
    parser.add_argument('--out', help='output folder (default: RUN_DIR/plots/scaling_factors)')
    args = parser.parse_args(argv)

    series, where = read_run(args.run_dir)
    keys = _layer_keys(series)
    if not keys:
        hint = ('it logged α but no per-layer γ' if series.get(ALPHA) else 'it logged no SSL scaling factors at all '
                '(a dense, method l1 or finetune-only run has no sparsity stage)')
        raise NoScalingFactors(
            f'{args.run_dir}: {hint} ({where}). BasicSR: set `logger: {{ssl_per_layer: true}}` in the options '
            '(and `use_tb_logger: true` for full-precision tensorboard scalars); MMagic: add SSLPruningHook to '
            'custom_hooks (it writes them to vis_data/scalars.json).')
    layers = choose_layers(keys, args.layers)
    if not layers:
        raise ValueError(f'no default layers among the logged ones ({keys}); choose some with --layers')
    out = Path(args.out) if args.out else Path(args.run_dir) / 'plots' / 'scaling_factors'
    result = plot(series, layers, out, title=f'{Path(args.run_dir).name}: scaling factors in the sparsity stage')
    print(f'read {where}; {len(layers)} layers -> {out}')
    for key, path in result['layers'].items():
        print(f'  {path}  ({key})')
    print(f'  {result["overview"]}\n  {result["csv"]}')
    return result


if __name__ == '__main__':
    try:
        main()
    except (NoScalingFactors, FileNotFoundError, ValueError) as e:
        raise SystemExit(f'error: {e}')
