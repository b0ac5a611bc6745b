# SSL (Structured Sparsity Learning) pruning of BasicVSR++ (64 channels, 7 blocks) on REDS4 (BI x4), on top of
# mmagic's own config.
#
#   python <mmagic>/.mim/tools/train.py options/mmagic/ssl_basicvsrpp_reds4.py [--resume]
#   python <mmagic>/.mim/tools/test.py  options/mmagic/ssl_basicvsrpp_reds4.py work_dirs/.../iter_N.pth
#
# One run = Algorithm 1: sparsity stage (S chosen by L1 norm on the pretrained dense BasicVSR++, scaling factors gamma
# inserted, L_SIR grows on S) -> prune (RSC in the feature extractor, the four propagation backbones and the
# reconstruction; pixel-shuffle groups of the upsamplers; conv_hr) -> finetune (pixel loss + Temporal Finetuning on
# the hidden states of all four branches). Never pruned: SPyNet, the deformable alignment, input convs, conv_last.
# On mmcv-lite the deformable convolution comes from ssl_plugin (torchvision's kernel), installed by custom_imports.
# Everything not set here comes unchanged from mmagic's basicvsr-pp_c64n7_8xb1-600k_reds4.py.
_base_ = 'mmagic::basicvsr_pp/basicvsr-pp_c64n7_8xb1-600k_reds4.py'

custom_imports = dict(imports=['ssl_plugin.mmagic_plugin'], allow_failed_imports=False)

experiment_name = 'ssl_basicvsrpp_reds4'
work_dir = f'./work_dirs/{experiment_name}'

# Stage lengths (see ssl_basicvsr_reds4.py): sparsity = ceil(ceiling / delta) * interval + stabilize_iter
# = 1000 * 5 + 14000; finetuning = the base config's 600000 iterations. SSLPruningHook checks that these agree.
sparsity_iters = 19_000
finetune_iters = 600_000

model = dict(
    type='SSLBasicVSR',
    # SSL prunes a trained network: the dense BasicVSR++ mmagic released for this config (its metafile's weights).
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://download.openmmlab.com/mmediting/restorers/basicvsr_plusplus/'
        'basicvsr_plusplus_c64n7_8x1_600k_reds4_20210217-db622b2f.pth'),
    ssl=dict(
        method='ssl',  # 'l1' = the L1-norm baseline: prune at once, then finetune
        pruning_ratio=0.5,
        scope='global_normalized',  # scores / their layer's mean, then one pool ('global': the paper's raw pool)
        max_layer_ratio=0.8,  # no layer loses more than 80 % of its units
        align=8,  # kept counts rounded up to multiples of 8: faster convs (README, Speed)
        reg=dict(delta=1e-4, interval=5, ceiling=0.1, stabilize_iter=14_000)),
    sir_loss=dict(type='SIRLoss', loss_weight=1.0),
    tf_loss=dict(type='TFLoss', loss_weight=1.0, distance='l1'),
    # SPyNet stays frozen through the sparsity stage and the first 5000 finetuning iterations (as for BasicVSR).
    train_cfg=dict(fix_iter=sparsity_iters + 5000))

train_cfg = dict(max_iters=sparsity_iters + finetune_iters)

# Constant learning rate while sparsifying, then mmagic's cosine schedule over the finetuning stage.
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
