"""``torchrun --nproc_per_node 2 ssl_plugin/train.py ... --launcher pytorch`` on CPU (gloo): both ranks choose the same
S, prune identically at the same iteration, rebuild DDP and finish."""
import re

import pytest
import torch
from bsr_helpers import TRAIN, fast_options, run_entry, write_options
from test_train_e2e import _logged_lrs, cosine_lrs


def test_two_rank_cpu_ddp_run_prunes_identically(tiny_data, tmp_path):
    opt = fast_options(tiny_data, 'ddp')
    opt['train'].update(total_iter=6, fix_flow=3)
    opt['val']['val_freq'] = 6
    opt['logger'].update(save_checkpoint_freq=3)
    proc = run_entry(TRAIN, write_options(tmp_path, opt), tmp_path, nproc=2)
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
