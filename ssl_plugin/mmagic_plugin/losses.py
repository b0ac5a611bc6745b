"""The engine's SSL loss modules in mmagic's MODELS registry, so configs can write ``dict(type='SIRLoss', ...)``.

The registered classes are the engine's own (same class objects); nothing is subclassed or re-implemented here.
"""
from mmagic.registry import MODELS

from ..core.losses import SIRLoss, TFLoss

MODELS.register_module(name='SIRLoss', module=SIRLoss)
MODELS.register_module(name='TFLoss', module=TFLoss)

__all__ = ['SIRLoss', 'TFLoss']
