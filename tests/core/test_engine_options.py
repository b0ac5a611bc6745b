"""Misspelt SSL keys: a near miss of one of our keys in a section the host owns is an error naming the right key;
the hosts' own keys are never mistaken for ours."""
from __future__ import annotations

import pytest

from ssl_plugin.core.algorithm import SSLConfig
from ssl_plugin.core.options import check_near_misses, near_miss

TRAIN = ('sir_opt', 'tf_opt', 'scheduler_starts_at_finetune', 'ssl_gamma_lr_mul')

#: Keys BasicSR 1.4.2 reads in these sections (its models, train.py and the options/train/BasicVSR / EDVR / ESRGAN /
#: StyleGAN files), and MMagic's BasicVSR arguments: none may count as a misspelling of ours.
BASICSR_TRAIN = ['ema_decay', 'optim_g', 'optim_d', 'scheduler', 'total_iter', 'warmup_iter', 'fix_flow',
                 'flow_lr_mul', 'dcn_lr_mul', 'tsa_iter', 'pixel_opt', 'perceptual_opt', 'gan_opt', 'ldl_opt',
                 'feature_matching_opt', 'net_d_iters', 'net_d_init_iters', 'net_d_reg_every', 'net_g_reg_every',
                 'r1_reg_weight', 'path_reg_weight', 'path_batch_shrink', 'mixing_prob', 'lr_flow', 'type']
BASICSR_LOGGER = ['print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb']
BASICSR_TOP = ['name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d', 'path',
               'train', 'val', 'logger', 'dist_params', 'find_unused_parameters', 'is_train', 'dist', 'rank',
               'world_size', 'auto_resume', 'root_path', 'high_order_degradation', 'queue_size', 'gt_usm',
               'l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm']


@pytest.mark.parametrize('key, right', [('tf_opts', 'tf_opt'), ('sir_opts', 'sir_opt'), ('TF_opt', 'tf_opt'),
                                        ('tfopt', 'tf_opt'), ('ssl_gama_lr_mul', 'ssl_gamma_lr_mul'),
                                        ('scheduler_starts_at_finetun', 'scheduler_starts_at_finetune'),
                                        ('scheduler_starts_at_finetuning', 'scheduler_starts_at_finetune')])
def test_near_misses_name_the_right_key(key, right):
    with pytest.raises(ValueError, match=rf'train\.{key}: unknown option; did you mean train\.{right}\?'):
        check_near_misses({key: 1, 'total_iter': 8}, TRAIN, 'train')


@pytest.mark.parametrize('key', ['sll', 'SSL', 'ssl_', 'sl'])
def test_short_keys_count_one_edit_as_a_near_miss(key):
    assert near_miss(key, ['ssl']) == 'ssl'
    with pytest.raises(ValueError, match=rf'^{key}: unknown option; did you mean ssl\?'):
        check_near_misses({key: {}}, ['ssl'])


def test_the_hosts_own_keys_are_left_alone():
    check_near_misses(dict.fromkeys(BASICSR_TRAIN), TRAIN, 'train')
    check_near_misses(dict.fromkeys(BASICSR_LOGGER), ['ssl_per_layer'], 'logger')
    check_near_misses(dict.fromkeys(BASICSR_TOP), ['ssl'], '')
    check_near_misses({'some_other_tool_opt': 1, 'tf': 2}, TRAIN, 'train')  # unknown but not ours: the host's


@pytest.mark.parametrize('options, match', [
    (dict(pruning_ration=0.5), r'ssl\.pruning_ration: unknown option \(did you mean ssl\.pruning_ratio\?'),
    (dict(reg=dict(stabilise_iter=5)), r'ssl\.reg\.stabilise_iter: unknown option \(did you mean '
                                      r'ssl\.reg\.stabilize_iter\?'),
    (dict(colour='red'), r'ssl\.colour: unknown option \(known: '),
])
def test_unknown_ssl_keys_name_the_closest_known_key(options, match):
    with pytest.raises(ValueError, match=match):
        SSLConfig.from_dict(options, where='ssl')
