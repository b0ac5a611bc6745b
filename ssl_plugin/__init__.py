"""ssl_plugin: Structured Sparsity Learning (SSL) channel pruning for video super-resolution, for BasicSR and MMagic.

Importing the package first applies the run-time compatibility shims (``ssl_plugin.compat``) that the pinned hosts
need on current torch / torchvision, so ``import ssl_plugin`` must precede ``import basicsr`` / ``mmagic.models``.
"""

from . import compat as _compat

__version__ = "0.1.0"

_compat.apply()

from .basicsr_plugin.autoload import install_hook as _install_basicsr_hook  # noqa: E402

_install_basicsr_hook()  # registers the BasicSR parts as soon as basicsr is imported (SSL_PLUGIN_DISABLE=1: off)
