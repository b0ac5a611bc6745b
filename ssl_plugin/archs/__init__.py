"""Networks ssl_plugin adds to BasicSR's ARCH_REGISTRY (imports basicsr).

Like BasicSR's own ``archs`` package, every ``*_arch.py`` here is imported so its ``@ARCH_REGISTRY.register()`` runs.
"""
import importlib
from os import path as osp

from basicsr.utils import scandir

_folder = osp.dirname(osp.abspath(__file__))
_names = sorted(osp.splitext(osp.basename(v))[0] for v in scandir(_folder) if v.endswith('_arch.py'))
_modules = [importlib.import_module(f'{__name__}.{name}') for name in _names]

from .basicvsr_uni_arch import BasicVSRUni  # noqa: E402

__all__ = ['BasicVSRUni']
