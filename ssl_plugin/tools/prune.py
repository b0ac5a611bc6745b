"""Dry run of the ``ssl:`` selection before any training: what S would cut, per layer and per part, and at what cost.

    python -m ssl_plugin.tools.prune --opt options/ssl_basicvsr_reds.yml [--ckpt net.pth] [--json s.json] [--png s.png]
    python -m ssl_plugin.tools.prune --config options/mmagic/ssl_basicvsr_reds4.py [--ckpt iter_N.pth] ...
    python -m ssl_plugin.tools.prune --opt l1.yml --save pruned.pth    # method l1: the one-shot L1-pruned network

Loads the dense network the options name (BasicSR ``path.pretrain_network_g``; MMagic ``init_cfg`` / ``load_from``) or
``--ckpt``, applies the ``ssl:`` selection exactly as a run would at its start (the same engine call, budget targets
included) and prints per key units / pruned / kept, per part (each trunk, the reconstruction, SPyNet) params and MACs
dense -> pruned, and the MAC ratio, on the options' training clip (``ssl.budget_size`` or ``--size`` override it).
``--save`` (method ``l1`` only: SSL's S is only removed after its sparsity stage) writes the pruned network as the
host's checkpoint (BasicSR: ``params`` + ``ssl_spec``; MMagic: ``state_dict`` + ``ssl``), which the host's test script
evaluates.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path


def _basicsr(args):
    from ssl_plugin.basicsr_plugin import checkpoint as ckpt_io
    from ssl_plugin.basicsr_plugin import register
    from ssl_plugin.basicsr_plugin.ssl_video_recurrent_model import budget_size
    from ssl_plugin.core import checkpoint as core_ckpt
    from ssl_plugin.core import describe
    from ssl_plugin.core.algorithm import SSLConfig
    from ssl_plugin.tools.plot_hidden_states import load_options

    register()
    from basicsr.archs import build_network

    opt = load_options(args.opt)
    cfg = SSLConfig.from_dict(opt.get('ssl'), where='ssl')
    net = build_network(copy.deepcopy(opt['network_g']))
    path = args.ckpt or (opt.get('path') or {}).get('pretrain_network_g')
    if not path:
        raise ValueError(f'{args.opt}: no dense network to select on: set path.pretrain_network_g or pass --ckpt')
    ckpt = ckpt_io.read_checkpoint(path)
    state, _ = ckpt_io.select_state(ckpt, args.param_key or (opt.get('path') or {}).get('param_key_g', 'params'),
                                    path)
    if ckpt_io.structure_of(ckpt, state) != core_ckpt.DENSE:
        raise ValueError(f'{path}: an SSL checkpoint; the selection is made on a dense network')
    core_ckpt.load_network_state(net, state, None, where=path, strict=True)

    def save(pruned_net, ctrl, out):
        ckpt_io.atomic_torch_save({'params': core_ckpt.network_state(pruned_net), ckpt_io.SPEC_KEY: ctrl.spec}, out)

    return cfg, net, budget_size(opt, describe(net)), save


def _mmagic(args):
    from mmagic.registry import MODELS
    from mmagic.utils import register_all_modules
    from mmengine.config import Config

    import ssl_plugin.mmagic_plugin  # noqa: F401  (registers SSLBasicVSR, the losses and the hook)
    from ssl_plugin.core import checkpoint as core_ckpt
    from ssl_plugin.core import describe
    from ssl_plugin.mmagic_plugin.loading import DenseSource, _read, check_generator_loaded, dense_sources
    from ssl_plugin.mmagic_plugin.pruning_hook import CHECKPOINT_KEY, budget_size

    register_all_modules()
    config = Config.fromfile(args.config)
    model = MODELS.build(copy.deepcopy(config.model))
    if args.ckpt:
        state, ssl = _read(args.ckpt, None)
        gen = {k[len('generator.'):]: v for k, v in state.items() if k.startswith('generator.')} or state
        sources = [DenseSource('--ckpt', args.ckpt, gen, [], ssl)]
    else:
        sources = dense_sources(model, config.get('load_from'))
    if not sources:
        raise ValueError(f'{args.config}: no dense generator to select on: set model.init_cfg / load_from or pass '
                         '--ckpt')
    for s in sources:
        if s.ssl is not None or core_ckpt.structure_of(s.state, None) != core_ckpt.DENSE:
            raise ValueError(f'{s.where}: an SSL checkpoint; the selection is made on a dense network')
    check_generator_loaded(model, sources)
    merged = {}
    for s in sources:  # in mmengine's order: a later file overrides an earlier one
        merged.update(s.state)
    model.generator.load_state_dict(merged, strict=True)

    def save(pruned_net, ctrl, out):
        from ssl_plugin.core.io import atomic_save
        state = {f'generator.{k}': v for k, v in core_ckpt.network_state(pruned_net).items()}
        atomic_save({'state_dict': state, 'meta': {}, CHECKPOINT_KEY: ctrl.state_dict()}, out)

    return model.ssl_cfg, model.generator, budget_size(config, describe(model.generator)), save


def plot(report: dict, out: str | Path) -> None:
    """Kept fraction per key (bars coloured by part), the MAC ratio in the title."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ssl_plugin.core.io import atomic_write

    keys = list(report['layers'])
    kept = [v['kept'] / v['units'] for v in report['layers'].values()]
    parts = [k.split('.')[0] if '.main.' in k else 'reconstruction' for k in keys]
    names = list(dict.fromkeys(parts))
    colors = [plt.get_cmap('tab10')(names.index(p) % 10) for p in parts]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(keys) + 2), 3.6))
    ax.bar(range(len(keys)), kept, color=colors, width=0.85)
    ax.set_ylabel('kept fraction')
    ax.set_xlabel('layer (scaling-factor key, network order)')
    if len(keys) <= 40:
        ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=plt.get_cmap('tab10')(i % 10)) for i in range(len(names))]
    ax.legend(handles, names, fontsize=7, loc='upper left', ncol=len(names), framealpha=0.9)
    ax.set_ylim(0, 1.15)
    s = report.get('settings') or {}
    title = ', '.join(f'{k} {v}' for k, v in s.items() if k not in ('method', 'normalize'))
    if 'mac_ratio' in report:
        title += f'\nMAC ratio x{report["mac_ratio"]:.3f}, params ratio x{report["param_ratio"]:.3f}'
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format='png', dpi=120))
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog='python -m ssl_plugin.tools.prune', description=__doc__.split('\n')[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument('--opt', help='a BasicSR option file with an ssl: section')
    which.add_argument('--config', help='an MMagic config with model.ssl')
    parser.add_argument('--ckpt', help='the dense network (default: the one the options load)')
    parser.add_argument('--param-key', help="BasicSR checkpoint entry (default: path.param_key_g or 'params')")
    parser.add_argument('--size', type=int, nargs=3, metavar=('FRAMES', 'H', 'W'),
                        help='LR clip the MACs are counted on (default: ssl.budget_size, else the training clip)')
    parser.add_argument('--json', help='write the report as JSON here')
    parser.add_argument('--png', help='plot the kept fraction per layer here')
    parser.add_argument('--save', help='method l1: write the one-shot L1-pruned network (host checkpoint) here')
    parser.add_argument('--device', default='cpu', help='torch device for the MAC count (default: cpu)')
    args = parser.parse_args(argv)

    from ssl_plugin.core import describe
    from ssl_plugin.core.algorithm import SSLController
    from ssl_plugin.core.io import atomic_write_text
    from ssl_plugin.core.selection import dumps, format_report

    cfg, net, size, save = (_basicsr if args.opt else _mmagic)(args)
    if args.save and cfg.method != 'l1':
        raise ValueError(f'--save writes the one-shot L1-pruned network: set ssl.method: l1 (method {cfg.method!r} '
                         'removes S only after its sparsity stage)')
    if args.size:  # the command line wins over the options
        size, cfg = list(args.size), dataclasses.replace(cfg, budget_size=None)
    net = net.to(args.device).eval()
    ctrl = SSLController(cfg)
    topology = describe(net)
    scores = ctrl.scores(net, topology)
    ctrl.ratio, ctrl.pruned, ctrl.report = ctrl.choose(net, topology, scores, size)
    ctrl.unit_counts = {k: int(v.numel()) for k, v in scores.items()}
    report = ctrl.report
    print('\n'.join(format_report(report)))
    if args.json:
        atomic_write_text(args.json, dumps(report))
        print(f'report written to {args.json}')
    if args.png:
        plot(report, args.png)
        print(f'plot written to {args.png}')
    if args.save:
        ctrl.prune(net, keep_teacher=False)  # method l1: S removed at once, no training
        save(net.cpu(), ctrl, args.save)
        print(f'one-shot L1-pruned network written to {args.save}')
    return report


if __name__ == '__main__':
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
        sys.exit(f'error: {e}')
