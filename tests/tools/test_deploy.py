"""Deployment tools: export (ONNX / torch.export files that run without this package or the hosts) and upscale
(whole videos in overlapping windows)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from deploy_helpers import FEAT, SIZE, options, pruned_checkpoint, write_frames

from ssl_plugin.tools import export as export_tool
from ssl_plugin.tools import upscale as upscale_tool
from ssl_plugin.tools.network import NetworkError, check_frame_size, load_network, min_frame_side

FRAMES = 2

#: Run in a child interpreter that cannot import this package or a host: a meta-path finder refuses them, and -I
#: keeps the working directory (the repository) off sys.path.
ISOLATED = textwrap.dedent('''
    import sys, importlib.abc
    BLOCKED = ('ssl_plugin', 'basicsr', 'mmagic', 'mmengine', 'mmcv')
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in BLOCKED:
                raise ImportError('blocked: ' + name)
    sys.meta_path.insert(0, Block())
    try:
        import ssl_plugin
        raise SystemExit('ssl_plugin imported')
    except ImportError:
        pass
    import json, numpy as np
    fmt, path, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    outs = {}
    if fmt == 'onnx':
        import onnxruntime as ort
        sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        run = lambda x: sess.run(None, {'lq': x})[0]
    else:
        import torch
        module = torch.export.load(path).module()
        run = lambda x: module(torch.from_numpy(x)).detach().numpy()
    for f in inputs:
        np.save(f + '.out.npy', run(np.load(f)))
    leaked = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
    print(json.dumps({'leaked': leaked}))
''')


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('deploy')
    opt = options(root / 'tiny.yml')
    net = pruned_checkpoint(root / 'tiny.pth')
    return root, opt, root / 'tiny.pth', net


@pytest.fixture(scope='module')
def exported(tiny):
    """One ONNX file (fixed batch) and one .pt2 file (dynamic batch) of the pruned network, made by the tool."""
    root, opt, ckpt, _ = tiny
    files = {}
    for fmt, extra in (('onnx', []), ('pt2', ['--dynamic'])):
        out = root / f'tiny.{fmt}'
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            result = export_tool.main(['--opt', str(opt), '--ckpt', str(ckpt), '--format', fmt, '--frames',
                                       str(FRAMES), '--size', *map(str, SIZE), '--out', str(out), *extra])
        files[fmt] = (out, result, printed.getvalue())
    return files


def run_isolated(fmt: str, path: Path, inputs: list[np.ndarray], tmp: Path) -> list[np.ndarray]:
    names = []
    for i, x in enumerate(inputs):
        names.append(str(tmp / f'in{i}.npy'))
        np.save(names[-1], x)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    proc = subprocess.run([sys.executable, '-I', '-c', ISOLATED, fmt, str(path), *names], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])['leaked'] == []
    return [np.load(n + '.out.npy') for n in names]


@pytest.mark.parametrize('fmt', ['onnx', 'pt2'])
def test_exported_file_runs_without_the_package_and_matches(fmt, tiny, exported, tmp_path, capsys):
    _, _, _, net = tiny
    path, result, _ = exported[fmt]
    assert path.is_file() and not list(path.parent.glob('*.tmp-*'))
    assert result['max_abs_error'] <= 1e-4
    dims = result['dims']
    assert (dims['frames'], dims['height'], dims['width']) == (FRAMES, *SIZE)
    assert isinstance(dims['batch'], str) == (fmt == 'pt2')  # --dynamic was given for the pt2 file only
    batches = (1, 3) if fmt == 'pt2' else (1,)
    xs = [torch.rand(b, FRAMES, 3, *SIZE, generator=torch.Generator().manual_seed(7 + b)) for b in batches]
    outs = run_isolated(fmt, path, [x.numpy() for x in xs], tmp_path)
    for x, out in zip(xs, outs):
        with torch.no_grad():
            ref = net(x).numpy()
        assert out.shape == ref.shape == (x.shape[0], FRAMES, 3, SIZE[0] * 4, SIZE[1] * 4)
        assert np.abs(out - ref).max() <= 1e-4


def test_export_prints_error_and_dims(exported):
    assert 'max abs error vs PyTorch on random input: ' in exported['onnx'][2]
    assert 'dynamic dims: none; fixed: batch=1, frames=2' in exported['onnx'][2]
    assert 'dynamic dims: batch (' in exported['pt2'][2]


def test_a_file_that_does_not_match_is_not_written(tiny, exported, tmp_path, monkeypatch):
    _, _, _, net = tiny
    made = exported['pt2'][0]
    monkeypatch.setattr(export_tool, 'export_pt2', lambda n, x, d, path: Path(path).write_bytes(made.read_bytes()))
    monkeypatch.setattr(export_tool, 'run_pt2', lambda path, x: net(x) + 1e-3)
    out = tmp_path / 'bad.pt2'
    with pytest.raises(export_tool.ExportError, match='differs from PyTorch by 0.001'):
        export_tool.export(net, 'pt2', out, FRAMES, SIZE)
    assert list(tmp_path.iterdir()) == []


def test_frame_size_bound_is_spynets(tiny):
    _, _, _, net = tiny
    side = min_frame_side(net)
    with torch.no_grad():
        net(torch.rand(1, 2, 3, side, side))
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 2, 3, side - 1, side))
    check_frame_size(net, side, side)
    with pytest.raises(NetworkError, match=f'too small .* at least {side} pixels'):
        check_frame_size(net, side, side - 1)


def net_on(net, frames: list[np.ndarray]) -> np.ndarray:
    return upscale_tool.TorchRunner(net)(np.stack(frames))


def test_upscale_writes_each_frame_from_its_window(tiny, tmp_path):
    _, opt, ckpt, net = tiny
    n = 5
    frames = write_frames(tmp_path / 'lq', n)
    out = tmp_path / 'sr'
    stats = upscale_tool.main(['--opt', str(opt), '--ckpt', str(ckpt), '--input', str(tmp_path / 'lq'),
                               '--output', str(out), '--chunk', '2', '--overlap', '1', '--quiet'])
    assert stats['frames'] == n and stats['window'] == 4 and stats['windows'] == 3
    got = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(out.glob('*.png'))]
    assert len(got) == n
    s = 0
    while s < n:  # the windows the tool documents: 4 frames from s - 1, shifted inwards at the ends
        w = upscale_tool.plan_window(s, 2, 1, 4, n)
        expected = net_on(net, frames[w.start:w.stop])
        for i in range(w.keep_from, w.keep_to):
            assert np.array_equal(got[i], expected[i - w.start]), i
        s = w.keep_to
    # A chunk covering the whole clip is one plain forward; the chunked output differs from it (cold starts).
    whole = net_on(net, frames)
    assert not all(np.array_equal(a, b) for a, b in zip(got, whole))


def test_upscale_mp4_and_exported_onnx(tiny, exported, tmp_path):
    _, opt, ckpt, net = tiny
    frames = write_frames(tmp_path / 'lq', 5)
    video = tmp_path / 'lq.mp4'
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 10, (SIZE[1], SIZE[0]))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    out = tmp_path / 'sr.mp4'
    stats = upscale_tool.main(['--onnx', str(exported['onnx'][0]), '--input', str(video), '--output', str(out),
                               '--quiet'])
    assert (stats['window'], stats['chunk'], stats['overlap']) == (FRAMES, FRAMES, 0)
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == 10
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 5
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (SIZE[1] * 4,
                                                                                               SIZE[0] * 4)
    # The ONNX windows equal the PyTorch network's on the same windows (decoded input, rounding aside).
    src = upscale_tool.open_input(video)
    decoded = list(src.frames)
    runner = upscale_tool.OnnxRunner(str(exported['onnx'][0]))
    got = runner(np.stack(decoded[3:5]))
    assert np.abs(got.astype(int) - net_on(net, decoded[3:5]).astype(int)).max() <= 1
    # The .pt2 file through the same windows, into PNG frames.
    stats = upscale_tool.main(['--pt2', str(exported['pt2'][0]), '--input', str(tmp_path / 'lq'), '--output',
                               str(tmp_path / 'sr_pt2'), '--quiet'])
    assert stats['frames'] == 5 and stats['windows'] == 3
    last = cv2.cvtColor(cv2.imread(str(tmp_path / 'sr_pt2' / '00000004.png')), cv2.COLOR_BGR2RGB)
    assert np.abs(last.astype(int) - net_on(net, frames[3:5])[1].astype(int)).max() <= 1


def test_windows_cover_every_frame_once():
    for n in range(1, 30):
        for chunk in (1, 2, 5, 8):
            for overlap in (0, 1, 3):
                length = chunk + 2 * overlap
                s, seen = 0, []
                while s < n:
                    w = upscale_tool.plan_window(s, chunk, overlap, length, n)
                    assert w.start <= w.keep_from < w.keep_to <= w.stop <= n
                    assert w.stop - w.start == min(length, n)
                    seen += range(w.keep_from, w.keep_to)
                    s = w.keep_to
                assert seen == list(range(n))


@pytest.mark.parametrize('case', ['unreadable', 'mismatch', 'small', 'onnx_size', 'chunk'])
def test_upscale_errors_name_the_problem(case, tiny, exported, tmp_path, capsys):
    root, opt, ckpt, _ = tiny
    args = ['--opt', str(opt), '--ckpt', str(ckpt), '--output', str(tmp_path / 'o'), '--quiet']
    if case == 'unreadable':
        bad = tmp_path / 'x.mp4'
        bad.write_text('not a video')
        args += ['--input', str(bad)]
        expect = f'cannot read video {bad}'
    elif case == 'mismatch':
        wide = options(tmp_path / 'wide.yml', feat=FEAT * 2)
        write_frames(tmp_path / 'lq', 2)
        args = ['--opt', str(wide), *args[2:], '--input', str(tmp_path / 'lq')]
        expect = f'--ckpt {ckpt} does not fit the network of --opt {wide}'
    elif case == 'small':
        write_frames(tmp_path / 'lq', 2, size=(24, 40))
        args += ['--input', str(tmp_path / 'lq')]
        expect = 'frame 24x40 (HxW) is too small'
    elif case == 'onnx_size':
        write_frames(tmp_path / 'lq', 2, size=(40, 40))
        args = ['--onnx', str(exported['onnx'][0]), '--input', str(tmp_path / 'lq'), '--output', str(tmp_path / 'o')]
        expect = f'takes {SIZE[0]}x{SIZE[1]} (HxW) frames'
    else:
        write_frames(tmp_path / 'lq', 2)
        args = ['--onnx', str(exported['onnx'][0]), '--input', str(tmp_path / 'lq'), '--output', str(tmp_path / 'o'),
                '--chunk', '2', '--overlap', '1']
        expect = 'needs windows of 4 frames; the exported file takes 2'
    with pytest.raises(SystemExit) as e:
        upscale_tool.main(args)
    assert e.value.code == 1
    assert expect in capsys.readouterr().err
    assert not (tmp_path / 'o').exists() or not list((tmp_path / 'o').iterdir())


def test_loader_reads_the_spec_and_refuses_a_wrong_key(tiny, tmp_path):
    _, opt, ckpt, net = tiny
    loaded = load_network(ckpt, opt=opt)
    assert loaded.structure == 'pruned' and loaded.source == 'basicsr'
    x = torch.rand(1, 2, 3, *SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))
    with pytest.raises(NetworkError, match="has no 'params_x' entry"):
        load_network(ckpt, opt=opt, param_key='params_x')


def test_mmagic_config_and_checkpoint_load(tmp_path):
    """An mmengine checkpoint (``state_dict`` with ``generator.`` keys, the spec under ``ssl``) with the shipped demo
    config, named as in the repository."""
    from mmagic.models.editors.basicvsr.basicvsr_net import BasicVSRNet

    from ssl_plugin.core import describe, l1_scores, prune, select_unimportant
    from ssl_plugin.core.checkpoint import network_state

    net = BasicVSRNet(mid_channels=16, num_blocks=2).eval()  # the demo config's generator
    spec = prune(net, select_unimportant(l1_scores(net, describe(net)), ratio=0.5, scope='local', align=1))
    ckpt = tmp_path / 'iter_40.pth'
    torch.save({'state_dict': {'generator.' + k: v for k, v in network_state(net).items()}, 'ssl': {'spec': spec},
                'meta': {}}, ckpt)
    loaded = load_network(ckpt, config='mmagic/ssl_basicvsr_demo.py')
    assert (loaded.structure, loaded.source) == ('pruned', 'mmagic')
    x = torch.rand(1, 2, 3, *SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))
    del spec['units'][next(iter(spec['units']))]
    torch.save({'state_dict': {'generator.' + k: v for k, v in network_state(net).items()}, 'ssl': {'spec': spec}},
               ckpt)
    with pytest.raises(NetworkError, match=f'--ckpt {ckpt} does not fit the network of --config'):
        load_network(ckpt, config='mmagic/ssl_basicvsr_demo.py')
