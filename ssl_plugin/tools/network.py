"""Build the dense or pruned generator of a BasicSR option file or an MMagic config and load a checkpoint into it:
the one loader behind ``export`` and ``upscale``.

A BasicSR ``net_g_*.pth`` carries the pruning spec under ``ssl_spec``; an mmengine checkpoint carries it under
``checkpoint['ssl']['spec']`` with the generator's tensors under ``state_dict`` / ``generator.``. Either way the
network is rebuilt to the saved structure and loaded strictly by the engine (``core.checkpoint``): a checkpoint that
does not fit the network is an error naming the file, never a partly random network. A flow network's pretrained-
weights path in the options is not read (the checkpoint holds its weights).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

#: Keys of a host arch that name a file of pretrained flow weights (BasicSR ``spynet_path``, MMagic
#: ``spynet_pretrained``): the checkpoint carries those weights, so the file is not needed.
FLOW_WEIGHT_KEYS = ('spynet_path', 'spynet_pretrained')


class NetworkError(ValueError):
    """Options, config or checkpoint that do not give a network (missing file, mismatch, unknown format)."""


@dataclass
class LoadedNetwork:
    net: nn.Module
    structure: str           # 'dense', 'scaled' or 'pruned' (core.checkpoint)
    source: str              # 'basicsr' or 'mmagic'
    scale: int | None        # the upscaling factor the options state, if they do


def resolve_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a file, else the shipped file of that name (``ssl_plugin.resources``), else an error."""
    from ..resources import find_option_file

    p = Path(path)
    if p.is_file():
        return p
    shipped = find_option_file(str(path))
    if shipped is not None:
        return shipped
    raise NetworkError(f'{what} {path} does not exist (nor is it one of the shipped option files: '
                       'python -m ssl_plugin.tools.options list)')


def _without_flow_weights(arch: dict) -> dict:
    arch = copy.deepcopy(dict(arch))
    for key in FLOW_WEIGHT_KEYS:
        if key in arch:
            arch[key] = None
    return arch


def read_basicsr_options(path: str | os.PathLike) -> dict:
    import yaml
    from basicsr.utils.options import ordered_yaml

    path = resolve_file(path, '--opt')
    with open(path) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    if not isinstance(opt, dict) or not isinstance(opt.get('network_g'), dict):
        raise NetworkError(f'--opt {path} has no network_g section (a BasicSR option file is needed)')
    return opt


def _basicsr(opt_path, ckpt: Path, param_key: str | None) -> LoadedNetwork:
    from basicsr.archs import build_network

    from ..basicsr_plugin import register
    from ..basicsr_plugin.checkpoint import SPEC_KEY, read_checkpoint, select_state
    from ..core.checkpoint import load_network_state
    register()

    opt = read_basicsr_options(opt_path)
    net = build_network(_without_flow_weights(opt['network_g']))
    try:
        ckpt_dict = read_checkpoint(str(ckpt))
    except Exception as e:  # not a torch file, a pickle weights_only refuses, not a dict
        raise NetworkError(f'--ckpt {ckpt}: cannot read it as a checkpoint ({type(e).__name__}: {e})') from e
    key = param_key if param_key is not None else (opt.get('path') or {}).get('param_key_g', 'params')
    try:
        state, _ = select_state(ckpt_dict, key, str(ckpt))
    except KeyError as e:
        raise NetworkError(str(e).strip('"\'')) from e
    kind = _load(net, state, ckpt_dict.get(SPEC_KEY), ckpt, load_network_state, f'--opt {opt_path}')
    return LoadedNetwork(net.eval(), kind, 'basicsr', opt.get('scale'))


def _mmagic(config_path, ckpt: Path) -> LoadedNetwork:
    from mmengine.config import Config

    import ssl_plugin.mmagic_plugin  # noqa: F401  (registers SSLBasicVSR; mmcv.ops stand-in)

    from ..core.checkpoint import load_network_state

    path = resolve_file(config_path, '--config')
    cfg = Config.fromfile(str(path))
    gen = (cfg.get('model') or {}).get('generator')
    if not gen:
        raise NetworkError(f'--config {path} has no model.generator')
    from mmagic.registry import MODELS
    from mmagic.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    net = MODELS.build(_without_flow_weights(gen.to_dict() if hasattr(gen, 'to_dict') else gen))
    try:
        ckpt_dict = torch.load(str(ckpt), map_location='cpu', weights_only=True)
    except Exception as e:
        raise NetworkError(f'--ckpt {ckpt}: cannot read it as a checkpoint ({type(e).__name__}: {e})') from e
    if not isinstance(ckpt_dict, dict):
        raise NetworkError(f'--ckpt {ckpt} is not an mmengine checkpoint (a dict)')
    state = ckpt_dict.get('state_dict', ckpt_dict)
    prefix = 'generator.'
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    spec = (ckpt_dict.get('ssl') or {}).get('spec')
    kind = _load(net, state, spec, ckpt, load_network_state, f'--config {config_path}')
    return LoadedNetwork(net.eval(), kind, 'mmagic', cfg.get('scale'))


def _load(net, state, spec, ckpt, load_network_state, options: str) -> str:
    from ..core.spec import SpecError
    try:
        return load_network_state(net, state, spec, where=f'--ckpt {ckpt}', strict=True)
    except (SpecError, RuntimeError, KeyError, ValueError) as e:
        raise NetworkError(f'--ckpt {ckpt} does not fit the network of {options}: {e}') from e


def load_network(ckpt: str | os.PathLike, opt: str | os.PathLike | None = None,
                 config: str | os.PathLike | None = None, param_key: str | None = None) -> LoadedNetwork:
    """The generator of ``opt`` (BasicSR YAML) or ``config`` (MMagic / mmengine .py) with ``ckpt`` loaded, in eval
    mode on the CPU."""
    if (opt is None) == (config is None):
        raise NetworkError('give exactly one of --opt (BasicSR options) or --config (MMagic config)')
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise NetworkError(f'--ckpt {ckpt} does not exist')
    return _basicsr(opt, ckpt, param_key) if opt is not None else _mmagic(config, ckpt)


# ------------------------------------------------------------------------------------------------ frame size
def flow_levels(net: nn.Module) -> int | None:
    """Pyramid levels of the network's SPyNet (BasicSR ``SpyNet`` / MMagic ``SPyNet``: one basic module per level),
    or None when it has none."""
    for module in net.modules():
        if type(module).__name__.lower() == 'spynet' and hasattr(module, 'basic_module'):
            return len(module.basic_module)
    return None


def min_frame_side(net: nn.Module) -> int:
    """The smallest frame side the network takes. SPyNet resizes a frame up to a multiple of ``2 ** (levels - 1)`` and
    halves it ``levels - 1`` times; its coarsest level must keep 2 pixels, so each side must exceed
    ``2 ** (levels - 1)``. 1 without a SPyNet."""
    levels = flow_levels(net)
    return 1 if levels is None else 2 ** (levels - 1) + 1


def check_frame_size(net: nn.Module, height: int, width: int, what: str = 'frame') -> None:
    smallest = min_frame_side(net)
    if min(height, width) < smallest:
        raise NetworkError(f'{what} {height}x{width} (HxW) is too small for the network\'s SPyNet flow estimator: '
                           f'both sides must be at least {smallest} pixels (upscale a larger video, or pad it)')
