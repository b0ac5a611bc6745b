# SSL pruning of BasicVSR on Vimeo-90K (BD x4; validation on Vid4-BD), on top of mmagic's own config.
#
#   python <mmagic>/.mim/tools/train.py options/mmagic/ssl_basicvsr_vimeo90k_bd.py [--resume]
#   python <mmagic>/.mim/tools/test.py  options/mmagic/ssl_basicvsr_vimeo90k_bd.py work_dirs/.../iter_N.pth
#
# Same SSL settings as ssl_basicvsr_reds4.py (see there); everything else comes unchanged from mmagic's
# basicvsr_2xb4_vimeo90k-bd.py, including its data layout and the six test sets of basicvsr_test_config.py.
_base_ = 'mmagic::basicvsr/basicvsr_2xb4_vimeo90k-bd.py'

custom_imports = dict(imports=['ssl_plugin.mmagic_plugin'], allow_failed_imports=False)

experiment_name = 'ssl_basicvsr_vimeo90k_bd'
work_dir = f'./work_dirs/{experiment_name}'

# sparsity_iters = ceil(ceiling / delta) * interval + stabilize_iter of model.ssl.reg (1000 * 5 + 14000); SSLPruningHook
# checks at start that it and the values derived from it agree with model.ssl.reg (see ssl_basicvsr_reds4.py).
sparsity_iters = 19_000
finetune_iters = 300_000

model = dict(
    type='SSLBasicVSR',
    # The dense BasicVSR mmagic released for this config (its metafile's weights).
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://download.openmmlab.com/mmediting/restorers/basicvsr/'
        'basicvsr_vimeo90k_bd_20210409-0154dd64.pth'),
    ssl=dict(
        method='ssl',
        pruning_ratio=0.5,  # or target_mac_ratio / target_params_ratio (then pruning_ratio=None)
        scope='global_normalized',  # scores / their layer's mean, then one pool ('global': the paper's raw pool)
        max_layer_ratio=0.8,  # no layer loses more than 80 % of its units
        align=8,  # kept counts rounded up to multiples of 8: faster convs (README, Speed)
        reg=dict(delta=1e-4, interval=5, ceiling=0.1, stabilize_iter=14_000)),
    sir_loss=dict(type='SIRLoss', loss_weight=1.0),
    tf_loss=dict(type='TFLoss', loss_weight=1.0, distance='l1'),
    train_cfg=dict(fix_iter=sparsity_iters + 5000))

train_cfg = dict(max_iters=sparsity_iters + finetune_iters)

param_scheduler = dict(
    type='CosineRestartLR',
    by_epoch=False,
    begin=sparsity_iters,
    periods=[finetune_iters],
    restart_weights=[1],
    eta_min=1e-7)

custom_hooks = [
    dict(type='BasicVisualizationHook', interval=1),
    dict(type='SSLPruningHook'),
]
