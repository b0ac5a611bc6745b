"""The shipped option files (paper settings and demo): they parse with BasicSR's own loader, hold a valid ``ssl:``
section whose schedule fits ``total_iter``, and build an SSLVideoRecurrentModel (network shrunk, data not needed)."""
from pathlib import Path

import pytest
import yaml
from bsr_helpers import REPO, parsed

import ssl_plugin  # noqa: F401
from ssl_plugin.basicsr_plugin import register

register()
from basicsr.data import DATASET_REGISTRY  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils.options import ordered_yaml  # noqa: E402

from ssl_plugin.core.algorithm import SSLConfig  # noqa: E402

OPTIONS = REPO / 'options'
TRAIN_FILES = ['ssl_basicvsr_reds.yml', 'ssl_basicvsr_uni_reds.yml', 'ssl_basicvsr_vimeo_bi.yml',
               'ssl_basicvsr_vimeo_bd.yml', 'ssl_basicvsr_demo.yml', 'ssl_basicvsrpp_reds.yml']
#: (width key, depth key, width, depth, frames, flow_lr_mul) of the paper-setting files, by network: BasicVSR++ keeps
#: upstream train_BasicVSRPP_REDS.yml's settings.
NETWORKS = {
    'BasicVSRPlusPlus': ('mid_channels', 'num_blocks', 64, 7, ((30, False),), 0.25),
    None: ('num_feat', 'num_block', 64, 30, ((15, False), (7, True)), 0.125),
}
PAPER = {'pruning_ratio': 0.5, 'scope': 'global_normalized', 'max_layer_ratio': 0.8, 'align': 8,
         'reg': {'delta': 1e-4, 'interval': 5, 'ceiling': 0.1, 'stabilize_iter': 14000}}


def _load(name):
    with open(OPTIONS / name) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])




@pytest.mark.parametrize('name', TRAIN_FILES)
def test_training_option_file(name, tmp_path):
    opt = _load(name)
    assert opt['model_type'] == 'SSLVideoRecurrentModel'
    cfg = SSLConfig.from_dict(opt['ssl'])
    for phase, dataset in opt['datasets'].items():
        assert dataset['type'] in DATASET_REGISTRY, (phase, dataset['type'])
    train = opt['train']
    sparsity = cfg.sparsity_iters
    assert sparsity < train['total_iter']
    if train.get('scheduler_starts_at_finetune'):
        assert sparsity + sum(train['scheduler']['periods']) == train['total_iter']
    width_key, depth_key, width, depth, frame_settings, flow_lr_mul = NETWORKS.get(opt['network_g']['type'],
                                                                                    NETWORKS[None])
    if name != 'ssl_basicvsr_demo.yml':   # the paper's settings
        assert {k: v for k, v in cfg.to_dict().items() if k in PAPER} == PAPER and cfg.method == 'ssl'
        assert opt['network_g'][width_key] == width and opt['network_g'][depth_key] == depth
        assert train['tf_opt']['type'] == 'TFLoss' and train['pixel_opt']['type'] == 'CharbonnierLoss'
        assert train['fix_flow'] == sparsity + 5000 and train['flow_lr_mul'] == flow_lr_mul
        frames = opt['datasets']['train']['num_frame']
        assert (frames, opt['datasets']['train'].get('flip_sequence', False)) in frame_settings
    # Everything but the data and the network size is used as written.
    small = dict(opt, datasets={}, network_g={'type': opt['network_g']['type'], width_key: 8, depth_key: 1})
    small['path'] = dict(opt['path'], pretrain_network_g=None)
    model = build_model(parsed(small, tmp_path))
    assert model.controller.stage == ('sparsity' if cfg.method == 'ssl' else 'finetune')
    assert (model.cri_tf is not None) == (train.get('tf_opt', 'TF on by default') is not None)


def test_test_option_file_evaluates_the_reds_run():
    test = _load('test_ssl_basicvsr_reds4.yml')
    train = _load('ssl_basicvsr_reds.yml')
    assert test['model_type'] == 'SSLVideoRecurrentModel'
    assert test['network_g']['type'] == train['network_g']['type']
    assert {k: test['network_g'][k] for k in ('num_feat', 'num_block')} == \
        {k: train['network_g'][k] for k in ('num_feat', 'num_block')}
    assert Path(test['path']['pretrain_network_g']).parts[:2] == ('experiments', train['name'])
    metrics = test['val']['metrics']
    assert metrics['psnr']['test_y_channel'] is False and metrics['ssim']['test_y_channel'] is True


@pytest.mark.parametrize('name', sorted(p.name for p in OPTIONS.glob('*.yml')))
def test_no_key_of_the_shipped_files_counts_as_a_misspelling(name):
    from ssl_plugin.basicsr_plugin.ssl_video_recurrent_model import LOGGER_KEYS, TRAIN_KEYS
    from ssl_plugin.core.options import check_near_misses
    opt = _load(name)
    check_near_misses(opt, ('ssl',))
    check_near_misses(opt.get('train'), TRAIN_KEYS, 'train')
    check_near_misses(opt.get('logger'), LOGGER_KEYS, 'logger')
