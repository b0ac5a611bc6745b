"""ssl_plugin for BasicSR 1.4.2: the model, losses and arch it registers, and its checkpoint format.

Registered names (unique; none shadows a BasicSR name): MODEL_REGISTRY ``SSLVideoRecurrentModel``, LOSS_REGISTRY
``SIRLoss`` and ``TFLoss``, ARCH_REGISTRY ``BasicVSRUni``. :func:`register` imports the modules that register them.
Importing this package alone does not import BasicSR (so ``import ssl_plugin`` stays cheap and MMagic-only
installations work); its public names load on first use.
"""
import importlib

_LAZY = {
    'SSLVideoRecurrentModel': '.ssl_video_recurrent_model',
    'SIRLoss': '.ssl_loss',
    'TFLoss': '.ssl_loss',
    'load_pruned_network': '.checkpoint',
    'SPEC_KEY': '.checkpoint',
}


def register() -> None:
    """Register every BasicSR part of the plugin (imports BasicSR; idempotent)."""
    importlib.import_module('ssl_plugin.archs')
    importlib.import_module('.ssl_loss', __name__)
    importlib.import_module('.ssl_video_recurrent_model', __name__)


def __getattr__(name):
    if name in _LAZY:
        register()
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['register', *_LAZY]
