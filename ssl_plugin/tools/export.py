"""Export a dense or pruned network as a file that runs without ssl_plugin, BasicSR or MMagic.

    python -m ssl_plugin.tools.export --opt OPTIONS.yml --ckpt net_g_latest.pth --format onnx --out net.onnx
    python -m ssl_plugin.tools.export --config CONFIG.py --ckpt iter_N.pth --format pt2 --frames 15 --size 180 320 \\
        --out net.pt2

``onnx``: for ONNX Runtime (input ``lq`` (B, T, 3, H, W), output ``sr``), through ``torch.onnx.export(dynamo=True)``;
``pt2``: a ``torch.export`` program (``torch.export.load(FILE).module()``). A pruned network's RSC blocks become plain
gather / conv / scatter-add ops, so nothing of this package is needed to run the file.

The file is checked against the PyTorch model on fresh random input before it is moved into place (max abs error
printed; above ``--tol``, default 1e-4 in fp32, it is not written). Shapes: the frame count and the frame size are fixed
(BasicVSR loops over frames in Python and SPyNet computes its resize from the frame size, so the exporters specialise
both); ``--dynamic`` makes the batch dimension dynamic. Longer videos run in chunks of the exported frame count
(``ssl_plugin.tools.upscale --onnx FILE`` does that, with overlapping chunks).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from .network import NetworkError, check_frame_size, load_network

FORMATS = ('onnx', 'pt2')
INPUT, OUTPUT = 'lq', 'sr'
DIM_NAMES = ('batch', 'frames', 'channels', 'height', 'width')
DEFAULT_FRAMES = 7
DEFAULT_SIZE = (180, 320)   # REDS LR frames
DEFAULT_TOL = 1e-4


class ExportError(RuntimeError):
    """The exporter failed, or the exported file does not reproduce the PyTorch model."""


def example_input(frames: int, size: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 3, *size, generator=g)


def _dynamic_shapes(dynamic: bool):
    if not dynamic:
        return None
    return ({0: torch.export.Dim('batch', min=1)},)


def export_pt2(net, example: torch.Tensor, dynamic: bool, path: str) -> None:
    program = torch.export.export(net, (example,), dynamic_shapes=_dynamic_shapes(dynamic))
    torch.export.save(program, path)


def export_onnx(net, example: torch.Tensor, dynamic: bool, path: str, metadata: dict | None = None) -> None:
    try:
        import onnx
    except ImportError as e:
        raise ExportError("ONNX export needs the optional packages: pip install 'ssl_plugin[export]' "
                          '-c constraints.txt') from e
    program = torch.onnx.export(net, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes=_dynamic_shapes(dynamic), optimize=True, verbose=False)
    if program is None:
        raise ExportError('torch.onnx.export returned no program')
    model = program.model_proto
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.save(model, path)


def run_pt2(path: str, x: torch.Tensor) -> torch.Tensor:
    module = torch.export.load(path).module()
    with torch.no_grad():
        return module(x)


def onnx_session(path: str, threads: int | None = None, device: str = 'cpu'):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    providers = ['CPUExecutionProvider']
    if device.startswith('cuda'):
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise ExportError('--device cuda: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)')
        providers.insert(0, 'CUDAExecutionProvider')
    return ort.InferenceSession(path, sess_options=opts, providers=providers)


def run_onnx(path: str, x: torch.Tensor) -> torch.Tensor:
    session = onnx_session(path)
    return torch.from_numpy(session.run(None, {INPUT: x.numpy()})[0])


def dynamic_dims(path: str, fmt: str) -> dict[str, str | int]:
    """Each input dimension by name: its fixed size, or the symbol the file leaves free."""
    if fmt == 'onnx':
        import onnx
        model = onnx.load(path, load_external_data=False)
        dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    else:
        program = torch.export.load(path)
        node = next(n for n in program.graph.nodes if n.op == 'placeholder' and n.name in
                    program.graph_signature.user_inputs)
        dims = [d if isinstance(d, int) else str(d) for d in node.meta['val'].shape]
    return dict(zip(DIM_NAMES, dims))


def check_file(net, path: str, fmt: str, example: torch.Tensor, dynamic: bool, tol: float) -> float:
    """Max abs error of the exported file against ``net`` on fresh random input (also at batch 2 if dynamic)."""
    frames, size = example.shape[1], tuple(example.shape[-2:])
    batches = (1, 2) if dynamic else (example.shape[0],)
    worst = 0.0
    for i, batch in enumerate(batches):
        x = example_input(frames, size, batch, seed=1 + i)
        with torch.no_grad():
            ref = net(x)
        with torch.no_grad():
            got = run_onnx(path, x) if fmt == 'onnx' else run_pt2(path, x)
        if got.shape != ref.shape:
            raise ExportError(f'exported file gives shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}')
        worst = max(worst, float((got - ref).abs().max()))
    if not worst <= tol:
        raise ExportError(f'the exported file differs from PyTorch by {worst:.3g} (max abs), above --tol {tol:g}')
    return worst


def export(net, fmt: str, out: str | os.PathLike, frames: int = DEFAULT_FRAMES, size=DEFAULT_SIZE,
           dynamic: bool = False, tol: float = DEFAULT_TOL, metadata: dict | None = None) -> dict:
    """Export ``net`` (eval, CPU, fp32) to ``out``, check it, move it into place; returns a summary."""
    if fmt not in FORMATS:
        raise ExportError(f'--format must be one of {FORMATS}, got {fmt!r}')
    if frames < 2:
        raise ExportError(f'--frames must be at least 2 (a recurrent network needs neighbours), got {frames}')
    check_frame_size(net, *size, what='--size')
    net = net.eval().float().cpu()
    # A batch of 1 is specialised by torch.export: a dynamic batch needs a larger example.
    example = example_input(frames, tuple(size), batch=2 if dynamic else 1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the suffix: torch.export.load recognises a .pt2 archive by it.
    fd, tmp = tempfile.mkstemp(prefix=out.stem + '.tmp-', suffix=out.suffix, dir=out.parent)
    os.close(fd)
    t0 = time.perf_counter()
    try:
        try:
            if fmt == 'onnx':
                export_onnx(net, example, dynamic, tmp, metadata)
            else:
                export_pt2(net, example, dynamic, tmp)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f'{fmt} export failed: {type(e).__name__}: {str(e).splitlines()[0][:400]}') from e
        seconds = time.perf_counter() - t0
        error = check_file(net, tmp, fmt, example, dynamic, tol)
        dims = dynamic_dims(tmp, fmt)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {'out': str(out), 'format': fmt, 'max_abs_error': error, 'dims': dims, 'export_seconds': seconds}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog='python -m ssl_plugin.tools.export', description=__doc__.split('\n\n')[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--opt', help='BasicSR option file (its network_g); a shipped file name works too')
    src.add_argument('--config', help='MMagic / mmengine config (its model.generator)')
    parser.add_argument('--ckpt', required=True, help='dense or pruned checkpoint (BasicSR net_g_*.pth or mmengine '
                                                     'iter_*.pth)')
    parser.add_argument('--param-key', default=None, help="BasicSR checkpoint entry (default: the options' "
                                                          "path.param_key_g, else 'params')")
    parser.add_argument('--format', required=True, choices=FORMATS)
    parser.add_argument('--frames', type=int, default=DEFAULT_FRAMES, help='frames per call (fixed in the file; '
                                                                          'default %(default)s)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), default=DEFAULT_SIZE,
                        help='LR frame size (fixed in the file; default %(default)s, REDS)')
    parser.add_argument('--dynamic', action='store_true', help='dynamic batch dimension')
    parser.add_argument('--tol', type=float, default=DEFAULT_TOL, help='largest max abs error accepted (fp32)')
    parser.add_argument('--out', required=True, help='output file')
    args = parser.parse_args(argv)
    try:
        loaded = load_network(args.ckpt, opt=args.opt, config=args.config, param_key=args.param_key)
        meta = {'ssl_plugin.structure': loaded.structure, 'ssl_plugin.source': loaded.source,
                'ssl_plugin.scale': loaded.scale}
        result = export(loaded.net, args.format, args.out, args.frames, tuple(args.size), args.dynamic, args.tol,
                        metadata=meta)
    except (NetworkError, ExportError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(1)
    dims = result['dims']
    free = [f'{k} ({v})' for k, v in dims.items() if isinstance(v, str)]
    fixed = [f'{k}={v}' for k, v in dims.items() if not isinstance(v, str)]
    print(f'exported the {loaded.structure} network to {result["out"]} ({args.format}, '
          f'{result["export_seconds"]:.1f} s)')
    print(f'max abs error vs PyTorch on random input: {result["max_abs_error"]:.3g} (tolerance {args.tol:g})')
    print(f'dynamic dims: {", ".join(free) if free else "none"}; fixed: {", ".join(fixed)}')
    print(f'run videos longer than {dims["frames"]} frames in chunks of {dims["frames"]} frames: '
          f'python -m ssl_plugin.tools.upscale --{"onnx" if args.format == "onnx" else "pt2"} {result["out"]} ...')
    return result


if __name__ == '__main__':
    main()
