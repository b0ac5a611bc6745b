"""Upscale a whole video (or a folder of frames) with a dense or pruned network, in memory-bounded chunks.

    python -m ssl_plugin.tools.upscale --opt OPTIONS.yml --ckpt net_g_latest.pth --input clip.mp4 --output out.mp4
    python -m ssl_plugin.tools.upscale --config CONFIG.py --ckpt iter_N.pth --input frames/ --output out_frames/
    python -m ssl_plugin.tools.upscale --onnx net.onnx --input clip.mp4 --output out.mp4     # an exported file

Why chunks: a recurrent network holds every frame of its input (and BasicVSR's backward branch needs the last frame
before the first output), so a whole video does not fit in memory. Each chunk of ``--chunk`` output frames is computed
from a window that reaches ``--overlap`` frames further on both sides; those extra frames warm the hidden states up
(the recurrence's cold start) and their outputs are dropped. Near the ends of the video the window shifts inwards and
keeps its length. An exported file takes a fixed number of frames: its windows have exactly that length (chunk =
frames - 2 x overlap unless given), and a video shorter than that is padded by repeating its last frame.

Frames are read in RGB as the hosts train on them. The output is PNG frames (``DIR``) or an mp4 (``OUT.mp4``, mp4v,
the input's frame rate).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v')
DEFAULT_CHUNK, DEFAULT_OVERLAP = 20, 4
DEFAULT_FPS = 25.0


class UpscaleError(ValueError):
    """Input, output or model options that cannot work, named in the message."""


# ------------------------------------------------------------------------------------------------------ reading
@dataclass
class FrameSource:
    frames: object            # iterator of RGB uint8 (H, W, 3) arrays
    height: int
    width: int
    count: int | None         # frames announced (a video container's count is a hint)
    fps: float


def _first(frames, what: str):
    try:
        return next(frames)
    except StopIteration:
        raise UpscaleError(f'{what} has no frames') from None


def open_video(path: Path) -> FrameSource:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UpscaleError(f'cannot read video {path}: OpenCV could not open it (not a video, or a codec it lacks)')
    fps = cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def frames():
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    it = frames()
    try:
        first = next(it)
    except StopIteration:
        raise UpscaleError(f'cannot read video {path}: OpenCV decoded no frame from it') from None
    return FrameSource(_chain(first, it), first.shape[0], first.shape[1], count, float(fps))


def open_frame_dir(path: Path, fps: float) -> FrameSource:
    import cv2

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UpscaleError(f'--input {path}: no image files ({", ".join(IMAGE_SUFFIXES)}) in this folder')

    def frames():
        shape = None
        for f in files:
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                raise UpscaleError(f'cannot read frame {f}')
            if shape is not None and bgr.shape != shape:
                raise UpscaleError(f'frame {f} is {bgr.shape[1]}x{bgr.shape[0]}, the first frame '
                                   f'{shape[1]}x{shape[0]}: all frames must have one size')
            shape = bgr.shape
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    it = frames()
    first = _first(it, f'--input {path}')
    return FrameSource(_chain(first, it), first.shape[0], first.shape[1], len(files), fps)


def _chain(first, rest):
    yield first
    yield from rest


def open_input(path: str | os.PathLike, fps: float | None = None) -> FrameSource:
    path = Path(path)
    if not path.exists():
        raise UpscaleError(f'--input {path} does not exist')
    if path.is_dir():
        return open_frame_dir(path, fps or DEFAULT_FPS)
    source = open_video(path)
    if fps:
        source.fps = fps
    return source


# ------------------------------------------------------------------------------------------------------ writing
class FrameDirWriter:
    def __init__(self, path: Path):
        if path.exists() and any(path.glob('*.png')):
            raise UpscaleError(f'--output {path} already holds PNG frames; give an empty or new folder')
        path.mkdir(parents=True, exist_ok=True)
        self.path, self.count = path, 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2
        name = self.path / f'{self.count:08d}.png'
        if not cv2.imwrite(str(name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise UpscaleError(f'could not write {name}')
        self.count += 1

    def close(self, ok: bool = True) -> None:
        pass


class Mp4Writer:
    """An mp4 written to a temporary name beside the target and renamed when complete."""

    def __init__(self, path: Path, fps: float):
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.count = path, fps, 0
        self.tmp = path.with_name(f'.{path.stem}.partial{path.suffix}')
        self.writer = None

    def write(self, rgb: np.ndarray) -> None:
        import cv2
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*'mp4v'), self.fps,
                                          (rgb.shape[1], rgb.shape[0]))
            if not self.writer.isOpened():
                raise UpscaleError(f'OpenCV cannot write an mp4 to {self.path}')
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.count += 1

    def close(self, ok: bool = True) -> None:
        if self.writer is not None:
            self.writer.release()
        if ok and self.count:
            os.replace(self.tmp, self.path)
        elif self.tmp.exists():
            self.tmp.unlink()


def open_output(path: str | os.PathLike, fps: float):
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if path.suffix.lower() != '.mp4':
            raise UpscaleError(f'--output {path}: only .mp4 video output is supported (or a folder for PNG frames)')
        return Mp4Writer(path, fps)
    if path.suffix and not path.is_dir():
        raise UpscaleError(f'--output {path}: give OUT.mp4 or a folder for PNG frames')
    return FrameDirWriter(path)


# ------------------------------------------------------------------------------------------------------ models
class TorchRunner:
    """A PyTorch module (the loaded network, or a ``torch.export`` program's module) on frames."""

    def __init__(self, net, device: str = 'cpu', fp16: bool = False, frames: int | None = None,
                 size: tuple[int, int] | None = None):
        import torch
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.net = net.to(self.device)
        if fp16:
            self.net = self.net.half()
        self.frames, self.size = frames, size

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).unsqueeze(0)
        x = x.to(self.dtype).div_(255)
        with torch.no_grad():
            y = self.net(x)[0]
        return y.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class OnnxRunner:
    """An exported ONNX file in ONNX Runtime (frame count and size fixed by the file)."""

    def __init__(self, path: str, device: str = 'cpu', threads: int | None = None):
        from .export import INPUT, onnx_session
        self.session = onnx_session(path, threads=threads, device=device)
        self.input = INPUT
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 5 or not all(isinstance(d, int) for d in shape[1:]):
            raise UpscaleError(f'--onnx {path}: input shape {shape} is not (B, T, 3, H, W) with fixed T, H, W')
        self.frames, self.size = shape[1], (shape[3], shape[4])

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = (frames.transpose(0, 3, 1, 2)[None].astype(np.float32) / 255)
        y = self.session.run(None, {self.input: x})[0][0]
        return (np.clip(y, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def pt2_runner(path: str, device: str = 'cpu') -> TorchRunner:
    import torch

    program = torch.export.load(path)
    node = next(n for n in program.graph.nodes if n.op == 'placeholder' and n.name in
                program.graph_signature.user_inputs)
    shape = node.meta['val'].shape
    fixed = [d if isinstance(d, int) else None for d in shape]
    if len(fixed) != 5 or None in fixed[1:]:
        raise UpscaleError(f'--pt2 {path}: input shape {tuple(shape)} is not (B, T, 3, H, W) with fixed T, H, W')
    return TorchRunner(program.module(), device, frames=fixed[1], size=(fixed[3], fixed[4]))


# ------------------------------------------------------------------------------------------------------ chunking
@dataclass(frozen=True)
class Window:
    start: int                # first frame fed to the network
    stop: int                 # one past the last real frame fed (padding repeats frame stop - 1)
    keep_from: int            # output frames keep_from .. keep_to - 1 are written
    keep_to: int


def plan_window(s: int, chunk: int, overlap: int, length: int, n: int | None) -> Window:
    """The window for the output frames from ``s``: ``length`` frames from ``s - overlap``, shifted inwards at the
    video's ends; ``n`` = the frame count once known (None while more frames may follow ``s + chunk + overlap``)."""
    start = max(0, s - overlap)
    if n is not None:
        start = min(start, max(0, n - length))
        stop = min(start + length, n)
        keep_to = min(s + chunk, n)
    else:
        stop = start + length
        keep_to = s + chunk
    return Window(start, stop, s, keep_to)


def chunk_settings(chunk: int | None, overlap: int | None, fixed_frames: int | None) -> tuple[int, int, int]:
    """(chunk, overlap, window length) checked against each other and an exported file's frame count."""
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    if overlap < 0:
        raise UpscaleError(f'--overlap must be >= 0, got {overlap}')
    if fixed_frames is None:
        chunk = DEFAULT_CHUNK if chunk is None else chunk
        if chunk < 1:
            raise UpscaleError(f'--chunk must be >= 1, got {chunk}')
        return chunk, overlap, chunk + 2 * overlap
    if chunk is None:
        if overlap > 0 and fixed_frames - 2 * overlap < 1:
            overlap = (fixed_frames - 1) // 2
        chunk = fixed_frames - 2 * overlap
    if chunk < 1 or chunk + 2 * overlap > fixed_frames:
        raise UpscaleError(f'--chunk {chunk} with --overlap {overlap} needs windows of {chunk + 2 * overlap} frames; '
                           f'the exported file takes {fixed_frames}: use chunk + 2 x overlap <= {fixed_frames} '
                           '(or export with more --frames)')
    return chunk, overlap, fixed_frames


def upscale_frames(source: FrameSource, model, writer, chunk: int, overlap: int, length: int,
                   pad_to_length: bool = False, progress: bool = True) -> dict:
    """Run ``model`` over every frame of ``source`` in windows; write each output frame once, in order."""
    from tqdm import tqdm

    buffer: dict[int, np.ndarray] = {}
    frames = iter(source.frames)
    read, n = 0, None

    def fill(until: int):
        nonlocal read, n
        while n is None and read < until:
            try:
                buffer[read] = next(frames)
            except StopIteration:
                n = read
                return
            read += 1

    bar = tqdm(total=source.count, unit='frame', disable=not progress, dynamic_ncols=True, file=sys.stderr)
    t0 = time.perf_counter()
    s = written = windows = 0
    try:
        while True:
            fill(max(0, s - overlap) + length)  # every frame the window can need before n is known
            if n is not None and s >= n:
                break
            w = plan_window(s, chunk, overlap, length, n)
            clip = np.stack([buffer[i] for i in range(w.start, w.stop)])
            if pad_to_length and len(clip) < length:
                clip = np.concatenate([clip, np.repeat(clip[-1:], length - len(clip), axis=0)])
            out = model(clip)
            for i in range(w.keep_from, w.keep_to):
                writer.write(out[i - w.start])
            written += w.keep_to - w.keep_from
            windows += 1
            bar.update(w.keep_to - w.keep_from)
            bar.set_postfix(fps=f'{written / (time.perf_counter() - t0):.2f}')
            s = w.keep_to
            for i in [i for i in buffer if i < s - length]:
                del buffer[i]
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    fps = written / seconds if seconds else math.inf
    return {'frames': written, 'windows': windows, 'seconds': seconds, 'fps': fps}


# ------------------------------------------------------------------------------------------------------ main
def build_model(args):
    import torch

    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise UpscaleError('--device cuda: CUDA is not available on this machine')
    if args.onnx or args.pt2:
        if args.fp16:
            raise UpscaleError('--fp16 applies to --opt / --config models (an exported file runs as exported)')
        if args.onnx:
            return OnnxRunner(args.onnx, args.device, args.threads)
        return pt2_runner(args.pt2, args.device)
    if args.fp16 and not args.device.startswith('cuda'):
        raise UpscaleError('--fp16 needs --device cuda (half-precision convolutions are slow or missing on CPU)')
    from .network import load_network
    if not args.ckpt:
        raise UpscaleError('--ckpt is needed with --opt / --config')
    loaded = load_network(args.ckpt, opt=args.opt, config=args.config, param_key=args.param_key)
    runner = TorchRunner(loaded.net, args.device, args.fp16)
    runner.loaded = loaded
    return runner


def run(args) -> dict:
    import torch

    from .network import check_frame_size

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    source = open_input(args.input, args.fps)
    if model.size is not None and tuple(model.size) != (source.height, source.width):
        raise UpscaleError(f'the exported file takes {model.size[0]}x{model.size[1]} (HxW) frames, --input '
                           f'{args.input} has {source.height}x{source.width}: export again with --size '
                           f'{source.height} {source.width}')
    if hasattr(model, 'net') and model.size is None:
        check_frame_size(model.net, source.height, source.width, what=f'--input {args.input}: frame')
    chunk, overlap, length = chunk_settings(args.chunk, args.overlap, model.frames)
    writer = open_output(args.output, source.fps)
    ok = False
    try:
        stats = upscale_frames(source, model, writer, chunk, overlap, length, pad_to_length=model.frames is not None,
                               progress=not args.quiet)
        ok = True
    finally:
        writer.close(ok)
    stats.update(chunk=chunk, overlap=overlap, window=length, output=str(args.output),
                 input_size=(source.height, source.width))
    return stats


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m ssl_plugin.tools.upscale', description=__doc__.split('\n\n')[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--opt', help='BasicSR option file (its network_g); a shipped file name works too')
    src.add_argument('--config', help='MMagic / mmengine config (its model.generator)')
    src.add_argument('--onnx', help='an ONNX file made by ssl_plugin.tools.export (runs in ONNX Runtime)')
    src.add_argument('--pt2', help='a torch.export file made by ssl_plugin.tools.export')
    p.add_argument('--ckpt', help='dense or pruned checkpoint (with --opt / --config)')
    p.add_argument('--param-key', default=None, help="BasicSR checkpoint entry (default: the options' "
                                                     "path.param_key_g, else 'params')")
    p.add_argument('--input', required=True, help='a video file or a folder of frames')
    p.add_argument('--output', required=True, help='OUT.mp4, or a folder for PNG frames')
    p.add_argument('--device', default='cpu', help='cpu or cuda (default: cpu)')
    p.add_argument('--fp16', action='store_true', help='half precision (CUDA, --opt / --config models)')
    p.add_argument('--chunk', type=int, default=None,
                   help=f'output frames per window (default {DEFAULT_CHUNK}; exported files: frames - 2 x overlap)')
    p.add_argument('--overlap', type=int, default=None,
                   help=f'extra frames on each side of a chunk that warm the recurrence up (default {DEFAULT_OVERLAP})')
    p.add_argument('--fps', type=float, default=None, help=f'output frame rate (default: the input\'s, '
                                                           f'{DEFAULT_FPS:g} for a folder)')
    p.add_argument('--threads', type=int, default=None, help='CPU threads (torch / ONNX Runtime)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    from .export import ExportError
    from .network import NetworkError
    try:
        stats = run(args)
    except (UpscaleError, NetworkError, ExportError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(1)
    print(f'upscaled {stats["frames"]} frames of {stats["input_size"][0]}x{stats["input_size"][1]} in '
          f'{stats["seconds"]:.1f} s ({stats["fps"]:.2f} frames/s; {stats["windows"]} windows of {stats["window"]} '
          f'frames, chunk {stats["chunk"]}, overlap {stats["overlap"]}) -> {stats["output"]}')
    return stats


if __name__ == '__main__':
    main()
