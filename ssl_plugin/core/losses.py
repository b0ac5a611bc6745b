"""The two SSL loss terms as plain ``nn.Module``s, so each host registers the same class in its own loss registry.

* :class:`SIRLoss` -- ``loss_weight * L_SIR`` for the current α of an :class:`~.sir.SparsityRegularizer`.
* :class:`TFLoss` -- ``loss_weight * L_TF`` between student and teacher hidden states (see :mod:`.temporal`).
"""
from __future__ import annotations

import torch
from torch import nn

from .sir import SparsityRegularizer
from .temporal import DISTANCES, temporal_finetuning_loss


class SIRLoss(nn.Module):

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, regularizer: SparsityRegularizer, gammas: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_weight * regularizer.loss(gammas)


class TFLoss(nn.Module):

    def __init__(self, loss_weight: float = 1.0, distance: str = 'l1'):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f'TFLoss distance must be one of {sorted(DISTANCES)}, got {distance!r}')
        self.loss_weight = float(loss_weight)
        self.distance = distance

    def forward(self, student_states: dict, teacher_states: dict) -> torch.Tensor:
        return self.loss_weight * temporal_finetuning_loss(student_states, teacher_states, self.distance)
