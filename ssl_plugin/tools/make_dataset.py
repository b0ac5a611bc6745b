"""Turn a real video into the frame-folder layout the hosts' own video datasets read.

Why: BasicSR's ``REDSRecurrentDataset`` / ``VideoRecurrentTestDataset`` and MMagic's ``BasicFramesDataset`` read
REDS/Vid4-style folders of PNG frames plus meta-info files. Producing exactly that layout lets any video train and
validate a host model without touching a host data pipeline.

Usage::

    python -m ssl_plugin.tools.make_dataset --video CLIP.mp4 --out DIR [--scale 4] [--degradations BI,BD]
        [--crop X,Y,W,H] [--resize WxH] [--start S] [--end E] [--clip-len N] [--names 001,000]
        [--overwrite | --append]

Output (``s`` = ``--scale``)::

    DIR/GT/<clip>/00000000.png ...      ground truth: the video frames, after --crop, then --resize
    DIR/BIx<s>/<clip>/00000000.png ...  MATLAB-style bicubic downsampling (BasicSR's matlab_functions.imresize)
    DIR/BDx<s>/<clip>/00000000.png ...  Gaussian blur (sigma 1.6, 13x13) then subsampling every s pixels
    DIR/meta_info_GT.txt                BasicSR meta info, every clip: ``<clip> <frames> (h,w,c)``
    DIR/meta_info_train.txt             the same lines for training clips
    DIR/meta_info_val.txt               the same lines for validation clips
    DIR/meta_info_reds4_train.txt       MMagic REDS-style annotation, training clips: ``<clip>/<%08d>.png (h, w, c)``
    DIR/meta_info_reds4_val.txt         the same for the validation clips
    DIR/dataset.json                    what was built (scale, degradations, clips, source frame ranges)

Train/validation split: BasicSR's ``REDSRecurrentDataset`` with ``val_partition: REDS4`` hard-codes the validation
clips as those named ``000``, ``011``, ``015``, ``020``. This tool uses the same rule everywhere, so a clip is a
validation clip exactly when ``--names`` gives it one of those names; all other clips are training clips.

BasicSR's ``REDSRecurrentDataset`` also hard-codes 100-frame clips (it draws start indices in ``0..100-num_frame``),
so a BasicSR training clip needs at least 100 frames and frames after the 100th are never read: use
``--clip-len 100``. Validation clips (``VideoRecurrentTestDataset``, MMagic) can have any length.

All PNGs are written with a fixed compression level and no metadata, so the same input gives byte-identical files.
Errors in the input raise ``DatasetError`` (a ``ValueError``) from the Python API and ``SystemExit`` from the CLI.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

DEFAULT_SCALE = 4
DEGRADATIONS = ('BI', 'BD')
BD_SIGMA = 1.6
BD_KERNEL_SIZE = 13
PNG_COMPRESSION = 3
# BasicSR REDSRecurrentDataset(val_partition='REDS4') holds out these clip names (and test_mode keeps only them).
REDS4_VAL_CLIPS = ('000', '011', '015', '020')
# BasicSR REDSRecurrentDataset reads frames 0..REDS_CLIP_FRAMES-1 of each training clip, whatever the meta file says.
REDS_CLIP_FRAMES = 100
GT_DIR = 'GT'
MARKER = 'dataset.json'
META_ALL = 'meta_info_GT.txt'
META_TRAIN = 'meta_info_train.txt'
META_VAL = 'meta_info_val.txt'
MMAGIC_TRAIN = 'meta_info_reds4_train.txt'
MMAGIC_VAL = 'meta_info_reds4_val.txt'
FRAME_TMPL = '{:08d}.png'
_NAME_RE = re.compile(r'^[A-Za-z0-9_.-]+$')


class DatasetError(ValueError):
    """The video or the options cannot give a dataset; the message names the problem."""


# --------------------------------------------------------------------------------------------------------------------
# degradations


def to_uint8(x):
    """Round like MATLAB's ``uint8()`` (half away from zero) and clip to 0..255."""
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def lq_dir_name(degradation, scale):
    """Folder of one degradation, named like the public sets (``BIx4``, ``BDx4``)."""
    return f'{degradation}x{scale}'


def gaussian_kernel_1d(kernel_size=BD_KERNEL_SIZE, sigma=BD_SIGMA):
    """Normalised 1-D Gaussian; its outer product with itself equals MATLAB ``fspecial('gaussian', k, sigma)``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise DatasetError(f'BD kernel size must be a positive odd number, got {kernel_size}')
    if sigma <= 0:
        raise DatasetError(f'BD sigma must be positive, got {sigma}')
    radius = kernel_size // 2
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def bd_offset(scale):
    """First sampled GT row/column of the BD subsampling: the top-left pixel of the centre of each ``s x s`` block."""
    return (scale - 1) // 2


def bd_degrade(img, scale, sigma=BD_SIGMA, kernel_size=BD_KERNEL_SIZE):
    """BD degradation (BasicVSR's "blur + downsample") of a uint8 ``(h, w, c)`` image.

    Exact convention:
    1. blur: correlate every channel with the ``kernel_size`` x ``kernel_size`` Gaussian of std ``sigma``
       (``fspecial('gaussian', kernel_size, sigma)``, normalised to sum 1), in float64 on 0..255 values, with
       replicate border padding (edge pixels repeated; MATLAB ``imfilter(img, k, 'replicate')``);
    2. subsample: ``lq[i, j] = blurred[s*i + o, s*j + o]`` with ``o = (s - 1) // 2`` (``o = 1`` for x4, i.e. MATLAB's
       ``blurred(s/2:s:end, s/2:s:end)`` in BasicSR's ``generate_LR_Vimeo90K_BD.m``), giving ``(h/s, w/s)``;
    3. round half away from zero and clip to uint8.
    The kernel is 13x13 (the size used for the public Vid4/UDM10 BD sets) rather than that script's 12x12.
    """
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise DatasetError(f'BD input {w}x{h} is not divisible by scale {scale}')
    g = gaussian_kernel_1d(kernel_size, sigma)
    radius = kernel_size // 2
    off = bd_offset(scale)
    rows = np.arange(off, h, scale)
    cols = np.arange(off, w, scale)
    x = img.astype(np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    # Separable correlation, evaluated only where the subsampling reads.
    padded = np.pad(x, ((radius, radius), (0, 0), (0, 0)), mode='edge')
    vert = sum(g[k] * padded[rows + k] for k in range(kernel_size))
    padded = np.pad(vert, ((0, 0), (radius, radius), (0, 0)), mode='edge')
    out = sum(g[k] * padded[:, cols + k] for k in range(kernel_size))
    out = to_uint8(out)
    return out if img.ndim == 3 else out[:, :, 0]


def bi_degrade(img, scale):
    """BI degradation: MATLAB ``imresize(img, 1/scale, 'bicubic')`` as BasicSR re-implements it, then uint8.

    The image goes in as float32 in [0, 1] (what ``basicsr.utils.matlab_functions.imresize`` expects) and comes back
    rounded like MATLAB's uint8 conversion.
    """
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise DatasetError(f'BI input {w}x{h} is not divisible by scale {scale}')
    # `import ssl_plugin` (done by importing this module) has applied the torchvision shim `import basicsr` needs.
    from basicsr.utils.matlab_functions import imresize

    out = imresize(img.astype(np.float32) / np.float32(255.0), 1.0 / scale)
    return to_uint8(np.asarray(out, dtype=np.float64) * 255.0)


def degrade(img, degradation, scale, bd_sigma=BD_SIGMA, bd_kernel_size=BD_KERNEL_SIZE):
    if degradation == 'BI':
        return bi_degrade(img, scale)
    if degradation == 'BD':
        return bd_degrade(img, scale, bd_sigma, bd_kernel_size)
    raise DatasetError(f'unknown degradation {degradation!r}; choose from {",".join(DEGRADATIONS)}')


# --------------------------------------------------------------------------------------------------------------------
# option parsing


def _ints(text, sep, count, what):
    parts = [p.strip() for p in str(text).lower().split(sep)]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise DatasetError(f'{what} must be {count} integers separated by {sep!r}, got {text!r}')
    return values


def parse_crop(text):
    """``'X,Y,W,H'`` -> ``(x, y, w, h)``."""
    x, y, w, h = _ints(text, ',', 4, '--crop')
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise DatasetError(f'--crop needs X,Y >= 0 and W,H > 0, got {text!r}')
    return x, y, w, h


def parse_size(text):
    """``'WxH'`` -> ``(w, h)``."""
    w, h = _ints(text, 'x', 2, '--resize')
    if w <= 0 or h <= 0:
        raise DatasetError(f'--resize needs W,H > 0, got {text!r}')
    return w, h


def parse_list(text):
    return [p.strip() for p in str(text).split(',') if p.strip()]


def _check_names(names):
    for name in names:
        if not _NAME_RE.match(name) or name in ('.', '..'):
            raise DatasetError(f'clip name {name!r} is not allowed: use letters, digits, "_", "-", "."')
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetError(f'clip names repeat: {dupes}')


def _check_degradations(degradations):
    degradations = [str(d).strip().upper() for d in degradations]
    if not degradations:
        raise DatasetError('--degradations is empty')
    bad = [d for d in degradations if d not in DEGRADATIONS]
    if bad:
        raise DatasetError(f'unknown degradation(s) {bad}; choose from {",".join(DEGRADATIONS)}')
    if len(set(degradations)) != len(degradations):
        raise DatasetError(f'--degradations repeats an entry: {degradations}')
    return degradations


# --------------------------------------------------------------------------------------------------------------------
# meta-info files


def split_of(name):
    """'val' for the clip names BasicSR's REDS4 partition holds out, else 'train'."""
    return 'val' if name in REDS4_VAL_CLIPS else 'train'


def _atomic_write_text(path, text):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'w', newline='\n') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def meta_lines_basicsr(clips):
    """BasicSR lines ``<clip> <frames> (h,w,c)``: split on single spaces into exactly three fields."""
    return [f'{name} {c["frames"]} ({",".join(str(v) for v in c["gt_shape"])})' for name, c in sorted(clips.items())]


def meta_lines_mmagic(clips):
    """MMagic REDS-style lines, one per GT frame: ``<clip>/<%08d>.png (h, w, c)`` (only the path is parsed)."""
    lines = []
    for name, c in sorted(clips.items()):
        shape = ', '.join(str(v) for v in c['gt_shape'])
        lines.extend(f'{name}/{FRAME_TMPL.format(i)} ({shape})' for i in range(c['frames']))
    return lines


def write_meta_files(root, record):
    """(Re)write every meta-info file and ``dataset.json`` of ``root`` from ``record``; return their paths."""
    root = Path(root)
    clips = record['clips']
    train = {n: c for n, c in clips.items() if split_of(n) == 'train'}
    val = {n: c for n, c in clips.items() if split_of(n) == 'val'}
    files = {
        'basicsr_all': (META_ALL, meta_lines_basicsr(clips)),
        'basicsr_train': (META_TRAIN, meta_lines_basicsr(train)),
        'basicsr_val': (META_VAL, meta_lines_basicsr(val)),
        'mmagic_train': (MMAGIC_TRAIN, meta_lines_mmagic(train)),
        'mmagic_val': (MMAGIC_VAL, meta_lines_mmagic(val)),
    }
    paths = {}
    for key, (fname, lines) in files.items():
        _atomic_write_text(root / fname, ''.join(line + '\n' for line in lines))
        paths[key] = str(root / fname)
    _atomic_write_text(root / MARKER, json.dumps(record, indent=2, sort_keys=True) + '\n')
    paths['record'] = str(root / MARKER)
    return paths


def load_record(root):
    """The ``dataset.json`` of a dataset this tool made, or None."""
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f'{path} is unreadable: {err}') from None


# --------------------------------------------------------------------------------------------------------------------
# video reading


def _open_video(video):
    video = Path(video)
    if not video.is_file():
        raise DatasetError(f'video not found: {video}')
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        cap.release()
        raise DatasetError(f'cannot read video {video}: OpenCV cannot open it')
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise DatasetError(f'cannot read video {video}: OpenCV decodes no frame from it')
    return cap, first


def _frames(cap, first, start, end):
    """Yield ``(index, frame)`` for source frames ``start <= index < end``; return the number of frames seen."""
    index = 0
    frame = first
    while end is None or index < end:
        if index >= start:
            yield index, frame
        index += 1
        if index < start:
            ok = cap.grab()
            frame = None
        else:
            ok, frame = cap.read()
        if not ok:
            break


def _prepare_gt(frame, crop, resize):
    if crop is not None:
        x, y, w, h = crop
        frame = frame[y:y + h, x:x + w]
    if resize is not None:
        w, h = resize
        shrink = w <= frame.shape[1] and h <= frame.shape[0]
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.ascontiguousarray(frame)


def _write_png(path, img):
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]):
        raise OSError(f'cannot write {path}')


# --------------------------------------------------------------------------------------------------------------------
# build


def _check_out(out, overwrite, append):
    """Validate the output folder; return the existing record in append mode."""
    if overwrite and append:
        raise DatasetError('--overwrite and --append exclude each other')
    if out.exists() and not out.is_dir():
        raise DatasetError(f'output {out} exists and is not a folder')
    non_empty = out.is_dir() and any(out.iterdir())
    record = load_record(out) if out.is_dir() else None
    if append:
        if record is None:
            raise DatasetError(f'--append needs an existing dataset made by this tool; {out} has no {MARKER}')
        return record
    if non_empty and not overwrite:
        raise DatasetError(f'output folder {out} is not empty; pass --overwrite to replace it or --append to add clips')
    if non_empty and record is None:
        raise DatasetError(f'refusing to delete {out}: it holds no {MARKER}, so this tool did not make it')
    return None


def _default_names(count, taken):
    names, i = [], 0
    while len(names) < count:
        name = f'{i:03d}'
        if name not in taken:
            names.append(name)
        i += 1
    return names


def build_dataset(video, out, *, scale=DEFAULT_SCALE, degradations=DEGRADATIONS, crop=None, resize=None, start=0,
                  end=None, clip_len=None, names=None, overwrite=False, append=False, bd_sigma=BD_SIGMA,
                  bd_kernel_size=BD_KERNEL_SIZE):
    """Build the dataset under ``out`` from ``video``; return a summary dict. The CLI wraps this.

    ``crop`` is ``(x, y, w, h)`` in source pixels, ``resize`` the GT ``(w, h)`` after the crop (INTER_AREA when
    shrinking, else bicubic). Source frames ``start <= i < end`` are used; ``clip_len`` splits them into clips of that
    many frames and drops a shorter remainder (reported in ``dropped_frames`` and ``warnings``). ``names`` names the
    clips in order (default ``000, 001, ...``, skipping names the dataset already has). ``overwrite`` replaces a
    dataset this tool made; ``append`` adds clips to one (same scale and degradations). Nothing under ``out`` changes
    unless the whole build succeeds.
    """
    out = Path(out)
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise DatasetError(f'--scale must be an integer >= 2, got {scale!r}')
    scale = int(scale)
    if isinstance(degradations, str):
        degradations = parse_list(degradations)
    degradations = _check_degradations(degradations)
    if 'BD' in degradations:
        gaussian_kernel_1d(bd_kernel_size, bd_sigma)
    if isinstance(crop, str):
        crop = parse_crop(crop)
    if isinstance(resize, str):
        resize = parse_size(resize)
    if resize is not None and (resize[0] % scale or resize[1] % scale):
        raise DatasetError(f'--resize {resize[0]}x{resize[1]} is not divisible by scale {scale}')
    start = int(start or 0)
    if start < 0:
        raise DatasetError(f'--start must be >= 0, got {start}')
    if end is not None and int(end) <= start:
        raise DatasetError(f'--end ({end}) must be greater than --start ({start}): the range holds no frame')
    end = None if end is None else int(end)
    if clip_len is not None and int(clip_len) < 1:
        raise DatasetError(f'--clip-len must be >= 1, got {clip_len}')
    clip_len = None if clip_len is None else int(clip_len)
    if isinstance(names, str):
        names = parse_list(names)
    if names is not None:
        names = list(names)
        if not names:
            raise DatasetError('--names is empty')
        _check_names(names)

    existing = _check_out(out, overwrite, append)
    if existing is not None:
        if existing.get('scale') != scale or sorted(existing.get('degradations') or []) != sorted(degradations):
            raise DatasetError(f'--append: {out} holds scale {existing.get("scale")} with degradations '
                               f'{existing.get("degradations")}, not scale {scale} with {degradations}')
        old_bd = existing.get('bd') or {}
        if 'BD' in degradations and (old_bd.get('sigma'), old_bd.get('kernel_size')) != (bd_sigma, bd_kernel_size):
            raise DatasetError(f'--append: {out} was blurred with sigma {old_bd.get("sigma")}, kernel '
                               f'{old_bd.get("kernel_size")}, not sigma {bd_sigma}, kernel {bd_kernel_size}')
        degradations = list(existing['degradations'])
        if names is not None:
            clash = sorted(set(names) & set(existing['clips']))
            if clash:
                raise DatasetError(f'--append: {out} already has clip(s) {clash}; choose other --names')

    cap, first = _open_video(video)
    src_h, src_w = first.shape[:2]
    if crop is not None:
        x, y, w, h = crop
        if x + w > src_w or y + h > src_h:
            cap.release()
            raise DatasetError(f'--crop {x},{y},{w},{h} reaches outside the {src_w}x{src_h} frame')
    gt_w, gt_h = resize if resize is not None else ((crop[2], crop[3]) if crop is not None else (src_w, src_h))
    if gt_w % scale or gt_h % scale:
        cap.release()
        raise DatasetError(f'GT frame size {gt_w}x{gt_h} (after --crop/--resize) is not divisible by scale {scale}; '
                           f'use --crop or --resize to get a multiple of {scale}')
    lq_dirs = {d: lq_dir_name(d, scale) for d in degradations}

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{out.name}.partial-', dir=out.parent))
    try:
        folders = [GT_DIR] + [lq_dirs[d] for d in degradations]
        counts = []  # frames written per clip, in order
        first_index = None
        seen_end = start
        try:
            for index, frame in _frames(cap, first, start, end):
                if first_index is None:
                    first_index = index
                seen_end = index + 1
                k = index - start
                clip = 0 if clip_len is None else k // clip_len
                pos = k if clip_len is None else k % clip_len
                if clip == len(counts):
                    counts.append(0)
                    for folder in folders:
                        (staging / folder / f'clip{clip}').mkdir(parents=True)
                gt = _prepare_gt(frame, crop, resize)
                fname = FRAME_TMPL.format(pos)
                _write_png(staging / GT_DIR / f'clip{clip}' / fname, gt)
                for d in degradations:
                    lq = degrade(gt, d, scale, bd_sigma, bd_kernel_size)
                    _write_png(staging / lq_dirs[d] / f'clip{clip}' / fname, lq)
                counts[clip] += 1
        finally:
            cap.release()
        total = sum(counts)
        if total == 0:
            raise DatasetError(f'--start {start} is past the end of {video}: the range holds no frame')
        warnings = []
        if end is not None and seen_end < end:
            warnings.append(f'--end {end} is past the end of the video; used source frames {start}..{seen_end - 1}')
        dropped = 0
        if clip_len is not None and counts[-1] < clip_len:
            dropped = counts.pop()
            for folder in folders:
                shutil.rmtree(staging / folder / f'clip{len(counts)}')
            if not counts:
                raise DatasetError(f'source frames {start}..{seen_end - 1} ({total} frames) are fewer than '
                                   f'--clip-len {clip_len}: no clip')
            warnings.append(f'dropped the last {dropped} frame(s) (source frames {seen_end - dropped}..'
                            f'{seen_end - 1}): fewer than --clip-len {clip_len}')
        taken = set(existing['clips']) if existing is not None else set()
        if names is None:
            clip_names = _default_names(len(counts), taken)
        elif len(names) != len(counts):
            raise DatasetError(f'--names gives {len(names)} name(s) but source frames {start}..{seen_end - 1} '
                               f'yield {len(counts)} clip(s)')
        else:
            clip_names = names

        # Final names, clip records.
        new_clips = {}
        src_start = start
        for i, (name, n) in enumerate(zip(clip_names, counts)):
            for folder in folders:
                os.replace(staging / folder / f'clip{i}', staging / folder / name)
            new_clips[name] = {
                'frames': n,
                'gt_shape': [gt_h, gt_w, 3],
                'lq_shape': [gt_h // scale, gt_w // scale, 3],
                'source': Path(video).name,
                'source_frames': [src_start, src_start + n],
                'crop': list(crop) if crop is not None else None,
                'resize': list(resize) if resize is not None else None,
            }
            src_start += n
        record = existing if existing is not None else {
            'format': 1,
            'scale': scale,
            'degradations': degradations,
            'lq_dirs': lq_dirs,
            'bd': {'sigma': bd_sigma, 'kernel_size': bd_kernel_size, 'offset': bd_offset(scale),
                   'padding': 'replicate'} if 'BD' in degradations else None,
            'png_compression': PNG_COMPRESSION,
            'val_partition': 'REDS4',
            'clips': {},
        }
        record['clips'].update(new_clips)
        warnings.extend(_split_warnings(record['clips']))

        if existing is None:
            # Everything, meta files included, is complete in the staging folder before it takes the place of `out`.
            meta = {k: str(out / Path(v).name) for k, v in write_meta_files(staging, record).items()}
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old-', dir=out.parent))
                os.replace(out, old / 'data')
                os.replace(staging, out)
                shutil.rmtree(old)
            else:
                os.replace(staging, out)
        else:
            for folder in folders:
                (out / folder).mkdir(exist_ok=True)
                for name in new_clips:
                    os.replace(staging / folder / name, out / folder / name)
            shutil.rmtree(staging)
            meta = write_meta_files(out, record)
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise

    all_clips = record['clips']
    return {
        'out': str(out),
        'video': str(video),
        'scale': scale,
        'degradations': degradations,
        'lq_dirs': lq_dirs,
        'gt_shape': [gt_h, gt_w, 3],
        'lq_shape': [gt_h // scale, gt_w // scale, 3],
        'clips': [dict(name=n, split=split_of(n), **new_clips[n]) for n in clip_names],
        'train_clips': sorted(n for n in all_clips if split_of(n) == 'train'),
        'val_clips': sorted(n for n in all_clips if split_of(n) == 'val'),
        'dropped_frames': dropped,
        'meta_files': meta,
        'warnings': warnings,
    }


def _split_warnings(clips):
    warnings = []
    train = sorted(n for n in clips if split_of(n) == 'train')
    val = sorted(n for n in clips if split_of(n) == 'val')
    if not train:
        warnings.append(f'no training clip: every clip is named as BasicSR\'s REDS4 validation partition '
                        f'({", ".join(REDS4_VAL_CLIPS)}); pick other --names for training clips')
    if not val:
        warnings.append(f'no validation clip: name one clip {REDS4_VAL_CLIPS[0]} (or {", ".join(REDS4_VAL_CLIPS[1:])})'
                        ' to hold it out for validation')
    short = [n for n in train if clips[n]['frames'] < REDS_CLIP_FRAMES]
    long = [n for n in train if clips[n]['frames'] > REDS_CLIP_FRAMES]
    if short:
        warnings.append(f'training clip(s) {short} have fewer than {REDS_CLIP_FRAMES} frames: BasicSR\'s '
                        f'REDSRecurrentDataset reads frames 0..{REDS_CLIP_FRAMES - 1} and will fail on them '
                        '(MMagic\'s BasicFramesDataset is fine)')
    if long:
        warnings.append(f'training clip(s) {long} have more than {REDS_CLIP_FRAMES} frames: BasicSR\'s '
                        f'REDSRecurrentDataset reads only the first {REDS_CLIP_FRAMES}; --clip-len '
                        f'{REDS_CLIP_FRAMES} uses them all')
    return warnings


# --------------------------------------------------------------------------------------------------------------------
# CLI


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m ssl_plugin.tools.make_dataset',
        description='Turn a video into GT / BIx<s> / BDx<s> frame folders plus the meta-info files that BasicSR '
                    '(REDSRecurrentDataset, VideoRecurrentTestDataset) and MMagic (BasicFramesDataset) read. '
                    f'Clips named {",".join(REDS4_VAL_CLIPS)} are validation clips (BasicSR\'s REDS4 partition); '
                    'all others are training clips.')
    parser.add_argument('--video', required=True, help='input video (anything OpenCV decodes, e.g. .mp4)')
    parser.add_argument('--out', required=True, help='dataset root to create')
    parser.add_argument('--scale', type=int, default=DEFAULT_SCALE, help='downsampling factor (default %(default)s)')
    parser.add_argument('--degradations', default=','.join(DEGRADATIONS),
                        help='comma-separated subset of BI,BD (default %(default)s)')
    parser.add_argument('--crop', default=None, metavar='X,Y,W,H', help='crop of each source frame, in pixels')
    parser.add_argument('--resize', default=None, metavar='WxH',
                        help='GT size after the crop; both sides divisible by --scale')
    parser.add_argument('--start', type=int, default=0, help='first source frame used, 0-based (default 0)')
    parser.add_argument('--end', type=int, default=None, help='source frame after the last one used (default: all)')
    parser.add_argument('--clip-len', type=int, default=None,
                        help='split the frames into clips of N frames; a shorter remainder is dropped '
                             f'(BasicSR training clips need {REDS_CLIP_FRAMES})')
    parser.add_argument('--names', default=None,
                        help='comma-separated clip names, in order (default 000,001,...); '
                             f'{",".join(REDS4_VAL_CLIPS)} become validation clips')
    parser.add_argument('--bd-sigma', type=float, default=BD_SIGMA, help='BD Gaussian std (default %(default)s)')
    parser.add_argument('--bd-kernel-size', type=int, default=BD_KERNEL_SIZE,
                        help='BD Gaussian kernel size, odd (default %(default)s)')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--overwrite', action='store_true', help='replace an existing dataset made by this tool')
    mode.add_argument('--append', action='store_true',
                      help='add clips to an existing dataset made by this tool (same scale and degradations)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        summary = build_dataset(
            args.video, args.out, scale=args.scale, degradations=args.degradations, crop=args.crop,
            resize=args.resize, start=args.start, end=args.end, clip_len=args.clip_len, names=args.names,
            overwrite=args.overwrite, append=args.append, bd_sigma=args.bd_sigma, bd_kernel_size=args.bd_kernel_size)
    except DatasetError as err:
        raise SystemExit(f'make_dataset: error: {err}') from None
    for c in summary['clips']:
        print(f'{c["name"]} ({c["split"]}): {c["frames"]} frames from source frames '
              f'{c["source_frames"][0]}..{c["source_frames"][1] - 1}, GT {c["gt_shape"][1]}x{c["gt_shape"][0]}, '
              f'LQ {c["lq_shape"][1]}x{c["lq_shape"][0]}')
    print(f'{summary["out"]}: train clips {summary["train_clips"]}, val clips {summary["val_clips"]}, '
          f'folders {[GT_DIR] + list(summary["lq_dirs"].values())}')
    for key, path in summary['meta_files'].items():
        print(f'  {key}: {path}')
    for warning in summary['warnings']:
        print(f'make_dataset: warning: {warning}', file=sys.stderr)
    return summary


if __name__ == '__main__':
    main()
