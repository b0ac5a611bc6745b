"""Checks of a run's options that both hosts make the same way; each error names the key to change.

Why: a pruning run that starts with a wrong setting still "succeeds" hours later with a weaker model (nothing
finetuned, TF silently off). These checks turn such settings into an error before training starts.
"""
from __future__ import annotations


def check_finetuning_left(sparsity_iters: int, total_iters: int, total_key: str, reg_key: str) -> None:
    """Pruning happens at the sparsity stage's last iteration: a run of ``total_iters`` must have iterations after it
    (``sparsity_iters`` counted from where the run is, in the host's iterations)."""
    if sparsity_iters >= total_iters:
        what = 'ends with the run: nothing would be finetuned' if sparsity_iters == total_iters else \
            'outlasts the run: nothing would be pruned'
        raise ValueError(f'{reg_key}: the sparsity stage takes {sparsity_iters} iterations and {what} '
                         f'({total_key} = {total_iters}); set {total_key} above {sparsity_iters} (sparsity + '
                         f'finetuning iterations) or shorten the stage ({reg_key})')
