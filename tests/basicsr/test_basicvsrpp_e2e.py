"""BasicVSR++ end to end through ``ssl_plugin/train.py`` on frames of the bundled bikes clip: sparsity -> prune ->
finetune with TF on the four branches, validation, and ``--auto_resume`` from the finetuning stage (the pruned
structure, the teacher and the optimizer are restored) ending on the same weights. (The MMagic BasicVSR++ test resumes
from the sparsity stage; tests/basicsr/test_train_e2e.py resumes BasicVSR from both.)

On a machine without CUDA BasicSR builds BasicVSR++ without its deformable alignment (its own choice at construction);
that is the network this run prunes. The aligned form is checked for exact pruning in tests/core."""
import shutil
from pathlib import Path

import torch
from bsr_helpers import TRAIN, base_options, merge, run_entry, write_options

TOTAL, PRUNE_AT = 4, 2   # SIR: 1 growth iteration (0 -> 0.1) + 1 stabilising -> prune after iteration 2
FRAMES = 2  # frames per clip of the bvpp_bikes fixture (tests/conftest.py: BVPP_CLIP_FRAMES)
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # a 2-thread run slows down many times over on a busy machine



def _options(data: Path) -> dict:
    opt = base_options(data, 'ssl_bvpp')
    whole_clip = {'type': 'VideoRecurrentTestDataset', 'dataroot_gt': str(data / 'GT'),
                  'dataroot_lq': str(data / 'BIx4'), 'cache_data': True, 'io_backend': {'type': 'disk'},
                  'num_frame': -1}
    # Training on the whole training clip (no random crop / flip): a run is a function of its options, which the
    # resume-equality check needs.
    opt['datasets'] = {
        'train': dict(whole_clip, name='REDS4', meta_info_file=str(data / 'meta_info_train.txt'),
                      num_worker_per_gpu=0, batch_size_per_gpu=1, dataset_enlarge_ratio=1, prefetch_mode=None),
        'val': dict(whole_clip, name='REDS4', meta_info_file=str(data / 'meta_info_val.txt')),
    }
    opt['network_g'] = {'type': 'BasicVSRPlusPlus', 'mid_channels': 8, 'num_blocks': 1, 'spynet_path': None}
    opt['ssl'].update(scope='local', reg={'delta': 0.1, 'interval': 1, 'ceiling': 0.1, 'stabilize_iter': 1})
    opt['logger'].update(save_checkpoint_freq=1)
    return merge(opt, train__total_iter=TOTAL, train__fix_flow=1, train__scheduler__periods=[TOTAL],
                 val__val_freq=TOTAL)


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_ssl_run_prunes_finetunes_with_tf_and_resumes(bvpp_bikes, tmp_path):
    cwd = tmp_path / 'straight'
    cwd.mkdir()
    opt = _options(bvpp_bikes)
    yml = write_options(cwd, opt)
    run_entry(TRAIN, yml, cwd, env=ONE_THREAD)
    exp = cwd / 'experiments' / opt['name']
    log = '\n'.join(p.read_text() for p in exp.glob('train_*.log'))
    assert f'SSL: sparsity stage finished at iter {PRUNE_AT}' in log and 'l_tf:' in log and '# psnr:' in log
    final = _load(exp / 'models' / f'net_g_{TOTAL}.pth')
    assert final['ssl_spec']['arch'] == 'BasicVSRPlusPlus'
    params = final['params']
    assert not any(k.startswith('deform_align.') for k in params)  # CPU: BasicSR built it without alignment
    for part in ('feat_extract', 'backbone.backward_1', 'backbone.forward_2', 'reconstruction'):
        assert f'{part}.main.2.0.in_idx' in params, part   # RSC blocks everywhere the topology says
    dense = _load(exp / 'models' / 'net_g_1.pth')['params']
    assert params['upconv1.weight'].shape[0] < dense['upconv1.weight'].shape[0]
    state = _load(exp / 'training_states' / f'{TOTAL}.state')
    assert state['ssl']['stage'] == 'finetune'

    resume_at = PRUNE_AT + 1   # finetuning stage: killed after saving iteration 3
    work = tmp_path / 'resumed'
    copy = work / 'experiments' / opt['name']
    shutil.copytree(exp, copy)
    for path in list((copy / 'models').iterdir()) + list((copy / 'training_states').iterdir()):
        it = path.stem.split('_')[-1]
        if not it.isdigit() or int(it) > resume_at:
            path.unlink()
    for old_log in copy.glob('train_*.log'):
        old_log.unlink()
    run_entry(TRAIN, yml, work, '--auto_resume', env=ONE_THREAD)
    assert f'iter: {resume_at}.' in '\n'.join(p.read_text() for p in copy.glob('train_*.log'))
    again = _load(copy / 'models' / f'net_g_{TOTAL}.pth')
    assert again['ssl_spec'] == final['ssl_spec']
    for key in ('params', 'params_ema'):
        assert again[key].keys() == final[key].keys()
        for name in final[key]:
            torch.testing.assert_close(again[key][name], final[key][name], rtol=1e-5, atol=1e-6, msg=f'{key}.{name}')
