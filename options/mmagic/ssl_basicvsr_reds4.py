# SSL (Structured Sparsity Learning) pruning of BasicVSR on REDS4 (BI x4), on top of mmagic's own config.
#
#   python <mmagic>/.mim/tools/train.py options/mmagic/ssl_basicvsr_reds4.py [--resume]
#   python <mmagic>/.mim/tools/test.py  options/mmagic/ssl_basicvsr_reds4.py work_dirs/.../iter_N.pth
#
# One run = Algorithm 1: sparsity stage (S chosen by L1 norm on the pretrained dense BasicVSR, scaling factors gamma
# inserted, L_SIR grows on S) -> prune (RSC) -> finetune (pixel loss + Temporal Finetuning against the unpruned
# teacher).
# Everything not set here comes unchanged from mmagic's basicvsr_2xb4_reds4.py.
_base_ = 'mmagic::basicvsr/basicvsr_2xb4_reds4.py'

custom_imports = dict(imports=['ssl_plugin.mmagic_plugin'], allow_failed_imports=False)

experiment_name = 'ssl_basicvsr_reds4'
work_dir = f'./work_dirs/{experiment_name}'

# Stage lengths. The sparsity stage lasts ceil(ceiling / delta) * interval + stabilize_iter iterations
# (model.ssl.reg below: 1000 * 5 + 14000; the engine's SSLConfig.sparsity_iters). A config file cannot ask the engine,
# so the number is written here; a config that changes reg must set sparsity_iters to match, and then everything
# derived from it below (fix_iter, max_iters, the scheduler's begin) again too. SSLPruningHook checks at start that
# sparsity_iters, max_iters (= sparsity_iters + finetune_iters) and param_scheduler.begin agree with model.ssl.reg and
# that fix_iter < max_iters, and stops naming the key and its right value otherwise.
sparsity_iters = 19_000
finetune_iters = 300_000

model = dict(
    type='SSLBasicVSR',
    # SSL prunes a trained network: the dense BasicVSR mmagic released for this config (its metafile's weights).
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://download.openmmlab.com/mmediting/restorers/basicvsr/'
        'basicvsr_reds4_20120409-0e599677.pth'),
    ssl=dict(
        method='ssl',  # 'l1' = the L1-norm baseline: prune at once, then finetune
        pruning_ratio=0.5,  # or target_mac_ratio / target_params_ratio (then pruning_ratio=None)
        scope='global_normalized',  # scores / their layer's mean, then one pool ('global': the paper's raw pool)
        max_layer_ratio=0.8,  # no layer loses more than 80 % of its units
        align=8,  # kept counts rounded up to multiples of 8: faster convs (README, Speed)
        reg=dict(delta=1e-4, interval=5, ceiling=0.1, stabilize_iter=14_000)),
    sir_loss=dict(type='SIRLoss', loss_weight=1.0),
    tf_loss=dict(type='TFLoss', loss_weight=1.0, distance='l1'),
    # SPyNet stays frozen through the sparsity stage and the first 5000 finetuning iterations (official SSL code).
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
