"""The two SSL loss terms in BasicSR's LOSS_REGISTRY, so option files (ours or another project's) build them with
``build_loss({'type': 'SIRLoss', ...})`` / ``{'type': 'TFLoss', ...}``.

The maths lives in the engine (``ssl_plugin.core.losses``); these subclasses only give BasicSR registry entries with
the host's option names and a clear error for a misspelt option.
"""
from basicsr.utils.registry import LOSS_REGISTRY

from ..core import losses as _core


@LOSS_REGISTRY.register()
class SIRLoss(_core.SIRLoss):
    """``loss_weight * L_SIR``: call as ``loss(regularizer, gammas)`` with the controller's SparsityRegularizer and the
    network's scaling factors ``{key: γ}``. Options: ``loss_weight`` (default 1.0)."""

    def __init__(self, loss_weight=1.0):
        super().__init__(loss_weight=loss_weight)


@LOSS_REGISTRY.register()
class TFLoss(_core.TFLoss):
    """``loss_weight * L_TF``: call as ``loss(student_states, teacher_states)`` with the hidden states per direction.
    Options: ``loss_weight`` (default 1.0), ``distance`` (``l1`` | ``l2`` | ``charbonnier``, default ``l1``)."""

    def __init__(self, loss_weight=1.0, distance='l1'):
        super().__init__(loss_weight=loss_weight, distance=distance)
