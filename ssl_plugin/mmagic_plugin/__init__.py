"""SSL for MMagic: ``custom_imports = dict(imports=['ssl_plugin.mmagic_plugin'], allow_failed_imports=False)``.

Importing this module registers into mmagic's registries: MODELS ``SSLBasicVSR`` (BasicVSR editor + L_SIR / L_TF),
``SIRLoss`` and ``TFLoss`` (the engine's classes), HOOKS ``SSLPruningHook`` (drives Algorithm 1). ``import ssl_plugin``
(the parent package) has already applied the run-time compatibility shims mmagic needs on this stack.
"""
from . import cpu_launch
from .losses import SIRLoss, TFLoss
from .pruning_hook import SSLPruningHook
from .ssl_basicvsr import SSLBasicVSR

cpu_launch.apply()

__all__ = ['SIRLoss', 'SSLBasicVSR', 'SSLPruningHook', 'TFLoss']
