"""``torchrun --nproc_per_node 2 ssl_plugin/train.py ... --launcher pytorch`` on CPU (gloo): both ranks choose the same
S, prune identically at the same iteration, rebuild DDP and finish; and, although each rank trains on a clip of its
own, every rank holds the same weights (net_g and EMA), optimizer state and scheduler state after every iteration, the
re-wrap at pruning and the last one included. That holds only if the start synchronises the ranks and the re-created
DDP wrapper reduces the new parameters."""
import re
from pathlib import Path

import pytest
import torch
from bsr_helpers import fast_options, run_entry, write_clip, write_options
from rank_states import assert_same
from test_train_e2e import _logged_lrs, cosine_lrs

PROBE = Path(__file__).resolve().parent / 'bsr_rank_probe.py'
CLIPS = ('000', '001')  # one per rank: EnlargedSampler hands each rank a different clip
FRAMES = 4


def _two_clip_data(root: Path) -> Path:
    for seed, name in enumerate(CLIPS, start=2):
        write_clip(root, name, FRAMES, seed=seed)
    shape = '(160,160,3)'
    (root / 'train_meta.txt').write_text(''.join(f'{c} {FRAMES} {shape}\n' for c in CLIPS))
    (root / 'val_meta.txt').write_text(f'{CLIPS[0]} {FRAMES} {shape}\n')
    return root


def test_two_rank_cpu_ddp_run_prunes_identically(tmp_path):
    data = _two_clip_data(tmp_path / 'data')
    opt = fast_options(data, 'ddp')
    opt['model_type'] = 'RankProbeModel'
    opt['datasets']['train']['meta_info_file'] = str(data / 'train_meta.txt')
    opt['train'].update(total_iter=6, fix_flow=3)
    opt['val']['val_freq'] = 6
    opt['logger'].update(save_checkpoint_freq=3)
    proc = run_entry(PROBE, write_options(tmp_path, opt), tmp_path, nproc=2)
    exp = tmp_path / 'experiments' / 'ddp'
    log = '\n'.join(p.read_text() for p in exp.glob('train_*.log'))
    assert 'World size (gpu number): 2' in log
    assert re.search(r'SSL: pruning spec identical on all 2 ranks', log), proc.stderr[-3000:]
    assert 'SSL: sparsity stage finished at iter 4' in log and '# psnr:' in log
    latest = torch.load(exp / 'models' / 'net_g_latest.pth', map_location='cpu', weights_only=True)
    assert latest['ssl_spec']['arch'] == 'BasicVSRUni'
    state = torch.load(exp / 'training_states' / '6.state', map_location='cpu', weights_only=True)
    assert state['ssl']['stage'] == 'finetune'
    # The optimizer still holds both parameter groups (the flow network is never dropped after the rebuild) ...
    assert len(state['optimizers'][0]['param_groups']) == 2
    # ... and one cosine schedule runs across the pruning at iteration 4 with no jump.
    lrs = _logged_lrs(log)
    assert sorted(lrs) == list(range(1, 7))
    for it, groups in lrs.items():
        assert groups == pytest.approx(cosine_lrs(it - 1, opt['train']['scheduler']['periods'][0]), rel=2e-3), it

    r0, r1 = (torch.load(exp / f'rank{r}.pt', map_location='cpu', weights_only=True) for r in (0, 1))
    assert [s['iter'] for s in r0] == [s['iter'] for s in r1] == list(range(1, 7))
    assert [s['stage'] for s in r0] == ['sparsity'] * 3 + ['finetune'] * 3  # pruned in iteration 4
    assert all(s['wrapped'] == 'DistributedDataParallel' for s in r0 + r1)
    assert all(a['lq_sum'] != b['lq_sum'] for a, b in zip(r0, r1)), 'ranks saw the same clip'
    assert r0[-1]['optimizers'][0]['state'], 'no optimizer state to compare'
    for a, b in zip(r0, r1):
        for key in ('net_g', 'net_g_ema', 'optimizers', 'schedulers'):
            assert_same(a[key], b[key], f'iter {a["iter"]} {key}')
