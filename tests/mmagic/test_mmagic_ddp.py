"""DDP with mmengine's `--launcher pytorch` on CPU (gloo, 2 processes) through mmagic's tools/train.py: both ranks must
prune the same S into the same structure and, although each rank trains on different data, hold the same generator
weights, optimizer state (Adam moments, step counts, parameter groups) and scheduler state after every iteration,
the rebuilds (γ inserted, network pruned) and the last one included. That holds only if the re-created DDP wrapper
reduces the new parameters."""
import torch
from mm_helpers import FINETUNE_ITERS, PYTHON, SPARSITY_ITERS, TRAIN, free_port, run_tool, write_user_config
from rank_states import assert_same

MAX_ITERS = SPARSITY_ITERS + FINETUNE_ITERS

DDP = '''
custom_imports = dict(imports=['ssl_plugin.mmagic_plugin', 'mm_rank_probe'], allow_failed_imports=False)
custom_hooks = [dict(type='SSLPruningHook'), dict(type='RankProbeHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
# torch's DDP refuses device_ids for CPU modules (mmengine passes [LOCAL_RANK] by default)
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                         find_unused_parameters=True)
randomness = dict(seed=0, diff_rank_seed=True)
val_dataloader = None
val_cfg = None
val_evaluator = None
'''


def test_two_ranks_prune_identically(clip_data, tmp_path):
    config = write_user_config(tmp_path, clip_data, name='ddp', extra=DDP)
    work = tmp_path / 'work'
    run_tool([PYTHON, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', '2',
              '--master_addr', '127.0.0.1', '--master_port', free_port(), TRAIN, config, '--launcher', 'pytorch',
              '--work-dir', work], cwd=tmp_path)
    r0, r1 = (torch.load(work / f'rank{r}.pt', weights_only=True) for r in (0, 1))
    assert r0['batches'] != r1['batches'], 'the ranks saw the same data: equality would prove nothing'
    assert_same(r0['pruned'], r1['pruned'], 'S')
    assert r0['spec'] == r1['spec']
    s0, s1 = r0['snapshots'], r1['snapshots']
    assert [s['iter'] for s in s0] == [s['iter'] for s in s1] == list(range(1, MAX_ITERS + 1))
    # pruned (and re-wrapped) in the last sparsity iteration
    assert [s['stage'] for s in s0] == ['sparsity'] * (SPARSITY_ITERS - 1) + ['finetune'] * (FINETUNE_ITERS + 1)
    assert all(s['wrapped'] == 'MMDistributedDataParallel' for s in s0 + s1)
    assert s0[-1]['optimizer']['state'], 'no optimizer state to compare'
    for a, b in zip(s0, s1):
        for key in ('generator', 'optimizer', 'schedulers'):
            assert_same(a[key], b[key], f'iter {a["iter"]} {key}')
