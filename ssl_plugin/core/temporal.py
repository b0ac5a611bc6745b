"""Temporal Finetuning (TF): pull the pruned network's hidden states towards the unpruned network's, at every time step
and in every propagation direction, because pruning error grows as the hidden state is carried along the recurrence.

Hidden states are captured with forward hooks on the modules the topology names (the trunks, called once per frame),
so no architecture code changes. Thanks to RSC both networks' hidden states have the same width and channel order.
Method ``aligned`` thins the hidden state itself, so channel-by-channel comparison is impossible there: TF compares the
pruned network's hidden state with the teacher's *kept* channels only (:func:`at_channels`); what the teacher carries
in the removed channels has no counterpart and is not matched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import bare_model, describe
from .topology import get_module

DISTANCES = {
    'l1': lambda a, b: F.l1_loss(a, b),
    'l2': lambda a, b: F.mse_loss(a, b),
    'charbonnier': lambda a, b: torch.sqrt((a - b) ** 2 + 1e-12).mean(),
}


class HiddenStateRecorder:
    """Context manager: while active, ``states[direction]`` collects the hidden state after each time step, in the
    order the network computes them (the backward branch runs from the last frame to the first).

    ``hidden`` maps directions to module paths (default: the topology's); the directions in ``residual`` (default:
    the topology's ``hidden_residual`` when ``hidden`` is taken from it, else none) record ``output + input[:, -C:]``,
    the state a module computes the update of (see :class:`~.topology.Topology`)."""

    def __init__(self, net: nn.Module, hidden: dict[str, str] | None = None, detach: bool = False,
                 residual=None):
        net = bare_model(net)
        if hidden is None:
            topology = describe(net)
            hidden = topology.hidden
            residual = topology.hidden_residual if residual is None else residual
        self.hidden = hidden
        self.residual = frozenset(residual or ())
        unknown = self.residual - set(hidden)
        if unknown:
            raise ValueError(f'residual hidden states {sorted(unknown)} are not among the directions {sorted(hidden)}')
        self.modules = {d: get_module(net, p) for d, p in self.hidden.items()}
        self.detach = detach
        self.states: dict[str, list[torch.Tensor]] = {d: [] for d in self.hidden}
        self._handles = []

    def __enter__(self):
        for d, m in self.modules.items():
            self.states[d] = []
            self._handles.append(m.register_forward_hook(self._hook(d)))
        return self

    def _hook(self, direction):
        residual = direction in self.residual

        def hook(module, args, output):
            if residual:
                output = output + args[0][:, args[0].shape[1] - output.shape[1]:]
            self.states[direction].append(output.detach() if self.detach else output)
        return hook

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False


@torch.no_grad()
def teacher_hidden_states(teacher: nn.Module, lq: torch.Tensor, hidden: dict[str, str] | None = None, residual=None):
    """Run the frozen unpruned teacher (eval, no grad) on ``lq`` and return its hidden states per direction."""
    was_training = teacher.training
    teacher.eval()
    try:
        with HiddenStateRecorder(teacher, hidden, detach=True, residual=residual) as rec:
            teacher(lq)
    finally:
        teacher.train(was_training)
    return rec.states


def at_channels(states: dict[str, list[torch.Tensor]], channels: dict[str, list[int]]) -> dict[str, list[torch.Tensor]]:
    """The teacher's hidden states reduced to the channels an aligned pruning kept, for each direction in
    ``channels`` (the others unchanged): the only channels a thinner hidden state can be compared with."""
    out = {}
    for d, steps in states.items():
        if d in channels:
            idx = torch.as_tensor(channels[d], dtype=torch.int64)
            steps = [s.index_select(1, idx.to(s.device)) for s in steps]
        out[d] = steps
    return out


def temporal_finetuning_loss(student: dict[str, list[torch.Tensor]], teacher: dict[str, list[torch.Tensor]],
                             distance: str = 'l1') -> torch.Tensor:
    """L_TF = mean over directions and time steps of ``distance(h_student, h_teacher)`` (each a mean over elements)."""
    if distance not in DISTANCES:
        raise ValueError(f'TF distance must be one of {sorted(DISTANCES)}, got {distance!r}')
    if set(student) != set(teacher):
        raise ValueError(f'hidden-state directions differ: student {sorted(student)}, teacher {sorted(teacher)}')
    terms = []
    for d in student:
        s, t = student[d], teacher[d]
        if len(s) != len(t) or not s:
            raise ValueError(f'{d}: student recorded {len(s)} steps, teacher {len(t)}; run both on the same clip')
        for hs, ht in zip(s, t):
            if hs.shape != ht.shape:
                raise ValueError(f'{d}: hidden state shapes differ ({tuple(hs.shape)} vs {tuple(ht.shape)})')
            terms.append(DISTANCES[distance](hs, ht.to(hs.dtype)))
    return torch.stack(terms).mean()


def frozen_teacher(net: nn.Module) -> nn.Module:
    """Make ``net`` a teacher: eval mode, no gradients."""
    net.eval()
    net.requires_grad_(False)
    return net
