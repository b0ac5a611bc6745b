"""DDP with mmengine's `--launcher pytorch` on CPU (gloo, 2 processes) through mmagic's tools/train.py: both ranks must
prune the same S into the same structure, and stay identical through both rebuilds (γ inserted, network pruned)
although each rank trains on different data, which holds only if the re-created DDP wrapper reduces the new
parameters."""
import torch
from mm_helpers import PYTHON, TRAIN, free_port, run_tool, write_user_config

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
    assert r0['wrapped'] == r1['wrapped'] == 'MMDistributedDataParallel'
    assert r0['stage'] == r1['stage'] == 'finetune'
    assert r0['batches'] != r1['batches'], 'the ranks saw the same data: weight equality would prove nothing'
    assert r0['pruned'].keys() == r1['pruned'].keys()
    for k in r0['pruned']:
        assert torch.equal(r0['pruned'][k], r1['pruned'][k]), k
    assert r0['spec'] == r1['spec']
    assert r0['generator'].keys() == r1['generator'].keys()
    for k, v in r0['generator'].items():
        torch.testing.assert_close(r1['generator'][k], v, rtol=1e-5, atol=1e-6, msg=k)
