"""SSLPruningHook reads the γ statistics from the device only at the iterations mmengine's LoggerHook prints (or the
visualizer records), and the numbers in the log are those an every-iteration computation gives."""
import json

import pytest
from mm_helpers import SPARSITY_ITERS, run_in_process, write_user_config

from ssl_plugin.core import algorithm
from ssl_plugin.mmagic_plugin import SSLPruningHook

LOG_INTERVAL = 3
# The shortest run with a finetuning stage, 3-frame clips, one checkpoint (mmengine formats the config at each save).
SHORT = f'''
default_hooks = dict(logger=dict(interval={LOG_INTERVAL}), checkpoint=dict(interval=100))
finetune_iters = 1
train_cfg = dict(max_iters={SPARSITY_ITERS + 1}, val_interval={SPARSITY_ITERS + 1})
param_scheduler = dict(begin={SPARSITY_ITERS}, periods=[1])
train_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root, num_input_frames=3))
'''


def test_gamma_statistics_only_at_logged_iterations(clip_data, tmp_path, monkeypatch):
    stats_at, reference, current = [], {}, {}
    real_stats = algorithm.gamma_stats

    def counting_stats(gammas, pruned):
        if not current.get('reference'):
            stats_at.append(current['iter'])
        return real_stats(gammas, pruned)

    real_before = SSLPruningHook.before_train_iter

    def spying_before(self, runner, batch_idx, data_batch=None):
        current['iter'] = runner.iter
        model = self._model(runner)
        current['reference'] = True  # what the log held when every iteration computed the statistics
        reference[runner.iter] = model.ssl_controller.log_values(model.generator, per_layer=False)
        current['reference'] = False
        return real_before(self, runner, batch_idx, data_batch)

    monkeypatch.setattr(algorithm, 'gamma_stats', counting_stats)
    monkeypatch.setattr(SSLPruningHook, 'before_train_iter', spying_before)
    config = write_user_config(tmp_path, clip_data, name='log_interval', fix_iter=SPARSITY_ITERS, extra=SHORT)
    work = tmp_path / 'work'
    runner = run_in_process(config, work, val_dataloader=None, val_cfg=None, val_evaluator=None)

    assert runner.model.ssl_controller.stage == 'finetune'
    # What the LoggerHook actually wrote: one json line per log line, 'step' = iteration + 1 (here iteration 0 by
    # LoggerHook's end-of-epoch rule, the one-sample dataset being one epoch, and every LOG_INTERVAL-th).
    lines = [json.loads(s) for s in next(work.glob(f'*/vis_data/{runner.timestamp}.json')).read_text().splitlines()]
    logged = {d['step'] - 1: d for d in lines}
    assert 0 < len(logged) < runner.max_iters
    sparsity_logged = {i for i in logged if i < SPARSITY_ITERS}
    # Statistics were read at the logged sparsity iterations and at the visualizer's (its first iteration and every
    # LoggerHook interval), never elsewhere, and once each.
    visualized = {0} | {i for i in range(SPARSITY_ITERS) if (i + 1) % LOG_INTERVAL == 0}
    assert sorted(stats_at) == sorted(sparsity_logged | visualized)
    assert len(stats_at) < SPARSITY_ITERS
    for it in sparsity_logged:
        for name in ('alpha', 'gamma_pruned', 'gamma_kept', 'stage'):
            assert logged[it][f'ssl/{name}'] == pytest.approx(reference[it][name], rel=1e-12, abs=0), (it, name)
    # Sparsity-stage values are not logged after the prune.
    assert all('ssl/gamma_pruned' not in logged[i] for i in logged if i >= SPARSITY_ITERS)
