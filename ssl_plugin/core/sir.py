"""Sparsity-inducing regularisation (SIR): a growing L2 penalty on the scaling factors of the unimportant set S.

L_SIR = 1/2 * sum over γ in S of α_γ * γ². The 1/2 makes its gradient α_γ * γ, exactly the official code's
``grad += α * γ`` update, so its Δ, T1, τ, T2 defaults carry over unchanged. It is a loss term (not a gradient patch),
so it goes through the host's backward, AMP scaling and DDP reduction like any other loss.

Schedule (Algorithm 1): α_γ = 0 at the start; every ``interval`` (T1) iterations α_γ = min(α_γ + delta, ceiling) for
γ in S; once every α_γ has reached ``ceiling`` (τ), ``stabilize_iter`` (T2) more iterations; then the stage is done.
"""
from __future__ import annotations

import torch

GROW, STABILIZE, DONE = 'grow', 'stabilize', 'done'


class SparsityRegularizer:
    """State of the sparsity stage: S, per-γ α, iteration count and stage; ``state_dict`` resumes it exactly."""

    def __init__(self, pruned: dict[str, torch.Tensor], delta: float = 1e-4, interval: int = 5,
                 ceiling: float = 0.1, stabilize_iter: int = 14000):
        if delta <= 0 or ceiling <= 0 or interval < 1 or stabilize_iter < 0:
            raise ValueError(f'invalid SIR schedule: delta={delta}, interval={interval}, ceiling={ceiling}, '
                             f'stabilize_iter={stabilize_iter} (need delta>0, interval>=1, ceiling>0, '
                             'stabilize_iter>=0)')
        self.delta, self.interval, self.ceiling, self.stabilize_iter = float(delta), int(interval), float(ceiling), \
            int(stabilize_iter)
        self.pruned = {k: v.detach().to('cpu', torch.int64) for k, v in pruned.items() if v.numel()}
        self.alpha = {k: torch.zeros(v.numel(), dtype=torch.float64) for k, v in self.pruned.items()}
        self.iter = 0
        self.stage = GROW if self.pruned else STABILIZE
        self.stabilize_start = 0

    @property
    def done(self) -> bool:
        return self.stage == DONE

    def current_alpha(self) -> float:
        """Largest α (all α in S move together under this schedule)."""
        return max((float(a.max()) for a in self.alpha.values()), default=0.0)

    def loss(self, gammas: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_SIR for the current α; zero (with a graph) before the first increment."""
        total = None
        for key, idx in self.pruned.items():
            g = gammas[key]
            a = self.alpha[key].to(device=g.device, dtype=g.dtype)
            term = 0.5 * (a * g[idx.to(g.device)] ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            any_gamma = next(iter(gammas.values()))
            total = any_gamma.sum() * 0
        return total

    def step(self) -> str:
        """Advance one iteration (call after the optimizer step); returns the stage."""
        if self.stage == DONE:
            return self.stage
        self.iter += 1
        if self.stage == GROW and self.iter % self.interval == 0:
            for key, a in self.alpha.items():
                self.alpha[key] = torch.clamp(a + self.delta, max=self.ceiling)
            # Increments are exact multiples of delta only up to float rounding; compare with a relative tolerance.
            if all(bool((a >= self.ceiling * (1 - 1e-9)).all()) for a in self.alpha.values()):
                self.stage, self.stabilize_start = STABILIZE, self.iter
        elif self.stage == STABILIZE and self.iter - self.stabilize_start >= self.stabilize_iter:
            self.stage = DONE
        if self.stage == STABILIZE and self.stabilize_iter == 0:
            self.stage = DONE
        return self.stage

    def total_iters(self) -> int:
        """Iterations the whole stage takes from the start (growth + stabilisation)."""
        return stage_length(self.delta, self.interval, self.ceiling, self.stabilize_iter, grows=bool(self.pruned))

    def state_dict(self) -> dict:
        return {'pruned': dict(self.pruned), 'alpha': dict(self.alpha), 'iter': self.iter, 'stage': self.stage,
                'stabilize_start': self.stabilize_start,
                'schedule': {'delta': self.delta, 'interval': self.interval, 'ceiling': self.ceiling,
                             'stabilize_iter': self.stabilize_iter}}

    @classmethod
    def from_state_dict(cls, state: dict) -> 'SparsityRegularizer':
        reg = cls(state['pruned'], **state['schedule'])
        reg.load_state_dict(state)
        return reg

    def load_state_dict(self, state: dict) -> None:
        if set(state['pruned']) != set(self.pruned) or any(
                not torch.equal(state['pruned'][k].cpu(), self.pruned[k]) for k in self.pruned):
            raise ValueError('SIR state was saved for a different unimportant set S')
        self.alpha = {k: v.detach().to('cpu', torch.float64).clone() for k, v in state['alpha'].items()}
        self.iter, self.stage, self.stabilize_start = int(state['iter']), str(state['stage']), \
            int(state['stabilize_start'])


def stage_length(delta: float, interval: int, ceiling: float, stabilize_iter: int, grows: bool = True) -> int:
    """Iterations of the sparsity stage under this schedule: the α increments (each exactly as ``step`` applies them,
    float rounding included) times ``interval``, plus ``stabilize_iter``. Every α grows alike, so the length does not
    depend on S; ``grows=False`` (an empty S) leaves only the stabilisation."""
    steps, a = 0, 0.0
    while a < ceiling * (1 - 1e-9):
        a = min(a + delta, ceiling)
        steps += 1
    return (steps * interval if grows else 0) + stabilize_iter


@torch.no_grad()
def gamma_stats(gammas: dict[str, torch.Tensor], pruned: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Mean |γ| of the pruned and of the kept units per key (the data of the paper's supplementary Fig. 1);
    NaN where a side is empty."""
    stats = {}
    for key, g in gammas.items():
        g = g.detach().abs().float().cpu()
        mask = torch.zeros(g.numel(), dtype=torch.bool)
        idx = pruned.get(key)
        if idx is not None and idx.numel():
            mask[idx.cpu()] = True
        p = float(g[mask].mean()) if mask.any() else float('nan')
        k = float(g[~mask].mean()) if (~mask).any() else float('nan')
        stats[key] = (p, k)
    return stats
