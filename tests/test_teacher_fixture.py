"""benchmarks/teacher.py: the segment split, the cache key, cache reuse and the stopping rule (no training here)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from script_module import load_script

import ssl_plugin  # noqa: F401  (host compatibility shims)
from ssl_plugin.tools.clips import CLIPS


@pytest.fixture(scope='module')
def t():
    return load_script('benchmarks/teacher.py', 'teacher_fixture')


def test_shipped_segments_are_disjoint_and_use_only_two_clips(t):
    assert set(t.SEGMENTS) == {'bikes', 'carphone'}  # the wheel's other videos stay held back
    t.check_segments(t.SEGMENTS, {c: CLIPS[c].frames for c in t.SEGMENTS})
    for clip, segs in t.SEGMENTS.items():
        frames = {split: set(range(*segs[split])) for split in segs}
        assert not frames['test'] & (frames['train'] | frames['val']), clip
        assert not frames['train'] & frames['val'], clip
    # every named folder belongs to its clip's segment, and the training chunks cover the training segment
    names = t.clip_names()
    for clip, segs in t.SEGMENTS.items():
        chunks = [(a, b) for c, split, a, b in names.values() if c == clip and split == 'train']
        assert chunks[0][0] == segs['train'][0] and chunks[-1][1] == segs['train'][1]
        assert all(b1 == a2 for (_, b1), (a2, _) in zip(chunks, chunks[1:]))


@pytest.mark.parametrize('segs, match', [
    ({'train': (0, 50), 'val': (40, 60), 'test': (70, 80)}, 'overlap'),
    ({'train': (0, 50), 'val': (60, 70), 'test': (65, 90)}, 'overlap'),
    ({'train': (0, 50), 'val': (60, 70), 'test': (80, 130)}, 'inside'),
    ({'train': (0, 50), 'test': (80, 90)}, 'exactly'),
])
def test_bad_segments_are_refused(t, segs, match):
    with pytest.raises(ValueError, match=match):
        t.check_segments({'carphone': segs}, {'carphone': 120})


def test_train_chunks(t):
    assert t.train_chunks(0, 160) == [(0, 80), (80, 160)]
    assert t.train_chunks(10, 70) == [(10, 70)]
    chunks = t.train_chunks(0, 250)
    assert len(chunks) == 3 and all(b - a <= 100 for a, b in chunks) and chunks[-1][1] == 250
    with pytest.raises(ValueError, match='empty'):
        t.train_chunks(5, 5)


def test_key_follows_settings_and_code(t, tmp_path):
    src = tmp_path / 'arch.py'
    src.write_text('x = 1\n')
    files = [src]
    base = t.teacher_key('bi', {}, files)
    assert t.teacher_key('bi', dict(t.DEFAULTS), files) == base  # explicit defaults = defaults
    assert t.teacher_key('bi', {'num_feat': 16}, files) != base
    assert t.teacher_key('bi', {'lr': t.DEFAULTS['lr'] / 2}, files) != base
    assert t.teacher_key('uni', {}, files) != base
    src.write_text('x = 2\n')
    assert t.teacher_key('bi', {}, files) != base  # a code change is a new teacher
    # the real key covers this script and the arch trained
    names = {p.name for p in t.source_files('uni')}
    assert {'teacher.py', 'basicvsr_uni_arch.py'} <= names
    assert 'basicvsr_arch.py' in {p.name for p in t.source_files('bi')}


@pytest.mark.parametrize('bad, match', [({'num_feats': 8}, 'unknown'), ({'num_feat': 0}, 'positive'),
                                        ({'gt_size': 50}, 'divisible'), ({'gt_size': 128}, 'SpyNet'),
                                        ({'gt_size': 148}, 'smallest'), ({'num_frame': 90}, 'shortest'),
                                        ({'fix_flow': 0}, 'fix_flow')])
def test_bad_settings_are_errors(t, bad, match):
    with pytest.raises(ValueError, match=match):
        t.resolve_settings(**bad)


def _fake_dataset(t, root: Path, gt_hw=(16, 24)) -> Path:
    """Tiny frame folders with the shipped segment lengths, and the dataset.json make_dataset writes."""
    h, w = gt_hw
    clips = {}
    for name, (_, _, a, b) in t.clip_names().items():
        for sub, (hh, ww) in (('GT', (h, w)), (f'BIx{t.SCALE}', (h // t.SCALE, w // t.SCALE))):
            (root / sub / name).mkdir(parents=True)
            for i in range(b - a):
                cv2.imwrite(str(root / sub / name / f'{i:08d}.png'), np.full((hh, ww, 3), i % 256, np.uint8))
        clips[name] = {'frames': b - a, 'gt_shape': [h, w, 3]}
    (root / 'dataset.json').write_text(json.dumps({'clips': clips}))
    return root


def test_every_training_sample_reads_frames_of_its_own_clip(t, tmp_path):
    """BasicSR's REDSRecurrentDataset draws num_frame frames per listed start: none may run past a clip's end."""
    from basicsr.data.reds_dataset import REDSRecurrentDataset

    data = _fake_dataset(t, tmp_path / 'data')
    s = dict(t.resolve_settings(num_frame=5), gt_size=16)
    meta = t.write_train_meta(data, tmp_path / 'meta.txt', s['num_frame'])
    opt = t.train_options('bi', s, data, meta, tmp_path / 'init.pth')['datasets']['train']
    ds = REDSRecurrentDataset(dict(opt, scale=t.SCALE, use_hflip=False, use_rot=False))
    lengths = {n: b - a for n, (_, split, a, b) in t.clip_names().items() if split == 'train'}
    assert len(ds) == sum(n - s['num_frame'] + 1 for n in lengths.values())
    last_seen = {}
    for i in range(len(ds)):
        item = ds[i]  # a missing frame would raise here
        clip = item['key'].split('/')[0]
        first = int(round(item['gt'][0, 0, 0, 0].item() * 255))
        assert item['gt'].shape[0] == s['num_frame']
        assert first + s['num_frame'] <= lengths[clip]
        last_seen[clip] = max(last_seen.get(clip, 0), first + s['num_frame'])
    assert last_seen == lengths  # the last frame of every clip is used


def test_stopper(t):
    st = t.Stopper(patience=2, min_gain=0.1)
    assert st.update(100, 20.0) and st.best_iter == 100
    assert not st.update(200, 20.05)  # below min_gain: not a new best
    assert st.update(300, 20.2) and not st.stop
    assert not st.update(400, 20.0) and not st.stop
    assert not st.update(500, 20.25) and st.stop and st.best_iter == 300


def test_cached_teacher_is_reused_and_incomplete_one_retrained(t, tmp_path, monkeypatch):
    calls = []

    def fake_train(arch, s, entry, cache, threads=1):
        calls.append(arch)
        entry.mkdir(parents=True, exist_ok=True)
        (entry / 'net_g.pth').write_bytes(b'weights')
        meta = {'complete': True, 'arch': arch, 'settings': s}
        (entry / 'teacher.json').write_text(json.dumps(meta))
        return meta

    monkeypatch.setattr(t, 'train', fake_train)
    monkeypatch.setenv(t.CACHE_ENV, str(tmp_path / 'cache'))
    path, meta = t.teacher('uni', num_feat=8)
    assert calls == ['uni'] and path.parent.parent == tmp_path / 'cache' and meta['settings']['num_feat'] == 8
    assert not (path.parent / 'lock').exists()
    assert t.teacher_checkpoint('uni', num_feat=8) == path and calls == ['uni']  # reused, not retrained
    t.teacher('uni', num_feat=16)
    assert calls == ['uni', 'uni']  # other settings: another entry
    # an interrupted entry (no complete metadata) and a stale lock of a dead process: trained again
    (path.parent / 'teacher.json').write_text(json.dumps({'complete': False}))
    (path.parent / 'lock').write_text('999999999')
    assert t.teacher_checkpoint('uni', num_feat=8) == path and calls == ['uni', 'uni', 'uni']
    t.teacher('uni', num_feat=8, force=True)
    assert len(calls) == 4


def test_val_crop_keeps_lr_and_gt_aligned(t):
    import torch
    lq = torch.arange(160.).view(1, 1, 1, 160).expand(2, 3, 4, 160)
    gt = torch.arange(640.).view(1, 1, 1, 640).expand(2, 3, 16, 640) / 4
    lq_c, gt_c = t.val_crop(lq, gt, 80)
    assert lq_c.shape[-1] == 80 and gt_c.shape[-1] == 320
    assert lq_c[0, 0, 0, 0] == 40 and gt_c[0, 0, 0, 0] == 40  # GT column 160 = LR column 40
    small = torch.zeros(1, 3, 36, 44)
    assert t.val_crop(small, small, 80)[0] is small  # narrower clips are left whole
