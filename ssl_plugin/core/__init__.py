"""The SSL engine: pure torch, host-agnostic (imports neither basicsr nor mmagic).

Topology (what is coupled) -> criterion (what is unimportant) -> SIR (make it sparse) -> surgery (how to cut) -> spec
(how to rebuild) -> Temporal Finetuning (recover along the recurrence).
"""
from . import (
    archs,  # noqa: F401  (registers the supported topologies)
    checkpoint,
    optim_state,
)
from .cost import cost_summary, count_macs, count_params
from .criterion import kept_indices, l1_scores, select_unimportant
from .inference import InferenceMode, InferenceRunner, auto_select, fold_rsc
from .losses import SIRLoss, TFLoss
from .registry import bare_model, describe, register_topology, supported
from .rsc import RSCBlock
from .scaling import GAMMA_IN, GAMMA_OUT, GAMMA_SKIP, insert_scaling_factors, merge_scaling_factors, scaling_factors
from .sir import SparsityRegularizer, gamma_stats
from .spec import FORMAT_VERSION, SpecError
from .surgery import apply_spec, prune
from .temporal import HiddenStateRecorder, frozen_teacher, teacher_hidden_states, temporal_finetuning_loss
from .topology import (
    AlignedGroup,
    Consumer,
    PixelShuffleUnit,
    PlainUnit,
    ResidualUnit,
    Topology,
    reconstruction_chain,
    residual_units,
)

__all__ = [
    'AlignedGroup', 'Consumer', 'FORMAT_VERSION', 'GAMMA_IN', 'GAMMA_OUT', 'GAMMA_SKIP', 'PixelShuffleUnit',
    'PlainUnit', 'RSCBlock',
    'ResidualUnit', 'SparsityRegularizer', 'SpecError', 'Topology', 'apply_spec', 'bare_model', 'describe',
    'gamma_stats', 'insert_scaling_factors', 'kept_indices', 'l1_scores', 'merge_scaling_factors', 'prune',
    'reconstruction_chain', 'register_topology', 'residual_units', 'scaling_factors', 'select_unimportant',
    'supported', 'HiddenStateRecorder', 'frozen_teacher', 'teacher_hidden_states', 'temporal_finetuning_loss',
    'SIRLoss', 'TFLoss', 'cost_summary', 'count_macs', 'count_params', 'checkpoint', 'optim_state',
    'InferenceMode', 'InferenceRunner', 'auto_select', 'fold_rsc',
]
