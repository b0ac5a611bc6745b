"""End to end with mmagic's own scripts, as a user runs them: tools/train.py on a user config that inherits the
project's demo config (sparsity -> prune -> finetune on real frames), tools/train.py --resume from a sparsity-stage
checkpoint (which must end on the same weights), then tools/test.py on the pruned checkpoint, which must reproduce
the validation score the training run measured with the same weights."""
import json
import shutil

import pytest
import torch
from mm_helpers import FINETUNE_ITERS, PYTHON, SPARSITY_ITERS, TEST, TRAIN, run_tool, write_user_config

MAX_ITERS = SPARSITY_ITERS + FINETUNE_ITERS
PSNR_KEY = 'carphone-BIx4-RGB/PSNR'


def _last_val_psnr(work):
    lines = [json.loads(s) for f in work.glob('*/vis_data/scalars.json') for s in f.read_text().splitlines()]
    vals = [d['PSNR'] for d in lines if 'PSNR' in d]
    assert vals, 'the training run logged no validation PSNR'
    return vals[-1]


def test_train_resume_then_test_pruned_checkpoint(clip_data, tmp_path):
    config = write_user_config(tmp_path, clip_data, name='e2e')
    work = tmp_path / 'work'
    train = run_tool([PYTHON, TRAIN, config, '--work-dir', work], cwd=tmp_path)
    log = train.stdout + train.stderr
    assert 'SSL: started' in log and 'SSL: pruned at iteration' in log
    assert 'not a multiple of 8' in log  # 8-channel generator: the width advice is logged
    ckpt = work / f'iter_{MAX_ITERS}.pth'
    state = torch.load(ckpt, map_location='cpu', weights_only=True)  # plain tensors / lists / str only
    assert state['ssl']['stage'] == 'finetune'
    assert any(k.endswith('.in_idx') for k in state['state_dict'])

    # --resume picks the newest checkpoint of the work dir: make that the last one of the sparsity stage
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(work / 'iter_2.pth', resumed / 'iter_2.pth')
    (resumed / 'last_checkpoint').write_text(str(resumed / 'iter_2.pth'))
    log = run_tool([PYTHON, TRAIN, config, '--work-dir', resumed, '--resume'], cwd=tmp_path)
    assert 'resumed epoch: 0, iter: 2' in log.stdout + log.stderr
    again = torch.load(resumed / f'iter_{MAX_ITERS}.pth', map_location='cpu', weights_only=True)
    for k, v in state['state_dict'].items():
        torch.testing.assert_close(again['state_dict'][k], v, rtol=1e-5, atol=1e-7, msg=k)

    out = tmp_path / 'metrics.json'
    run_tool([PYTHON, TEST, config, ckpt, '--work-dir', tmp_path / 'test', '--out', out], cwd=tmp_path)
    metrics = json.loads(out.read_text())
    assert metrics[PSNR_KEY] == pytest.approx(_last_val_psnr(work), abs=1e-4)
    assert metrics[PSNR_KEY] > 10  # a real image comparison, not an empty or broken output
