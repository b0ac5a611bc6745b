"""BasicVSR++ (with its deformable alignment, on the stand-in's torchvision DCN) end to end with mmagic's own
tools/train.py on frames of the bundled bikes clip: sparsity -> prune -> finetune with TF on the four branches,
validation, and ``--resume`` from the sparsity stage (through the prune) ending on the same weights. (The BasicSR
BasicVSR++ test resumes from the finetuning stage; tests/mmagic/test_mmagic_runner.py resumes BasicVSR from both.)"""
import shutil

import torch
from mm_helpers import DEMO_CONFIG, PYTHON, TRAIN, run_tool

SPARSITY, FINETUNE, FRAMES = 2, 2, 2  # FRAMES: per clip of the bvpp_bikes fixture (tests/conftest.py)
MAX_ITERS = SPARSITY + FINETUNE

CONFIG = '''
_base_ = {base!r}
experiment_name = 'bvpp'
data_root = {data!r}
sparsity_iters = {sparsity}
finetune_iters = {finetune}
model = dict(
    generator=dict(_delete_=True, type='BasicVSRPlusPlusNet', mid_channels=8, num_blocks=1, spynet_pretrained=None),
    ssl=dict(reg=dict(delta=0.1, interval=1, ceiling=0.1, stabilize_iter=1)),
    train_cfg=dict(fix_iter=1))
# Whole clips, no random crop or flip: the run is a function of its config (what the resume check needs).
train_pipeline = [
    dict(type='GenerateSegmentIndices', interval_list=[1]),
    dict(type='LoadImageFromFile', key='img', channel_order='rgb'),
    dict(type='LoadImageFromFile', key='gt', channel_order='rgb'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root, num_input_frames={frames},
                                                   pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(max_iters=sparsity_iters + finetune_iters, val_interval=sparsity_iters + finetune_iters)
param_scheduler = dict(begin=sparsity_iters, periods=[finetune_iters])
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, save_best=None))
'''



def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_train_prune_finetune_and_resume(bvpp_bikes, tmp_path):
    config = tmp_path / 'bvpp.py'
    config.write_text(CONFIG.format(base=str(DEMO_CONFIG), data=str(bvpp_bikes), sparsity=SPARSITY, finetune=FINETUNE,
                                    frames=FRAMES))
    work = tmp_path / 'work'
    train = run_tool([PYTHON, TRAIN, config, '--work-dir', work], cwd=tmp_path)
    log = train.stdout + train.stderr
    assert 'SSL: started' in log and 'SSL: pruned at iteration' in log and 'loss_tf' in log
    assert 'PSNR' in log  # validated at the end
    final = _load(work / f'iter_{MAX_ITERS}.pth')
    assert final['ssl']['stage'] == 'finetune'
    weights = final['state_dict']
    assert any(k.startswith('generator.deform_align.') for k in weights)  # the alignment is there and trained
    for part in ('feat_extract', 'backbone.backward_1', 'backbone.forward_2', 'reconstruction'):
        assert f'generator.{part}.main.2.0.in_idx' in weights, part

    resume_at = 1   # sparsity stage: the resumed run re-inserts the γ, then prunes and finetunes
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(work / f'iter_{resume_at}.pth', resumed / f'iter_{resume_at}.pth')
    (resumed / 'last_checkpoint').write_text(str(resumed / f'iter_{resume_at}.pth'))
    out = run_tool([PYTHON, TRAIN, config, '--work-dir', resumed, '--resume'], cwd=tmp_path)
    assert f'resumed epoch: 0, iter: {resume_at}' in out.stdout + out.stderr
    again = _load(resumed / f'iter_{MAX_ITERS}.pth')['state_dict']
    assert again.keys() == weights.keys()
    for k, v in weights.items():
        torch.testing.assert_close(again[k], v, rtol=1e-5, atol=1e-7, msg=k)
