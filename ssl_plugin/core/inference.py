"""Inference options for a dense or pruned network: what turns a MAC cut into wall-clock time on a given device.

A recurrent VSR forward at batch 1 is a long chain of small kernels, so on a GPU it is bound by launches as much as by
MACs, and every RSC block adds a gather and a scatter launch. A *mode* is a ``+``-joined set of options, applied to a
copy of the network (the caller's network is never changed):

``channels_last``  weights (hence every conv) in NHWC, the layout cuDNN and oneDNN compute in;
``fold``           every :class:`~.rsc.RSCBlock` becomes a plain residual block (:func:`fold_rsc`): no index ops, more
                   MACs (conv1 reads every skip channel, conv2 writes every one, with zero weights for the dropped);
``bf16`` / ``fp16``  autocast (convs in reduced precision; not exact, so never chosen by :func:`auto_select` unless
                   asked for);
``graph``          CUDA only: the whole forward captured once at the example's shape and replayed (one launch);
``compile``        ``torch.compile`` (with ``graph``: its ``reduce-overhead`` mode, i.e. CUDA graphs of its own).

``eager`` (or ``''``) is none of them. On CUDA, ``torch.backends.cudnn.benchmark`` is switched on (fixed shapes: each
conv gets its fastest kernel during warm-up). :func:`auto_select` times candidate modes on the actual input and device
and keeps the fastest whose output matches eager's.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .registry import bare_model
from .rsc import RSCBlock

AUTOCAST = {'bf16': torch.bfloat16, 'fp16': torch.float16}
TOKENS = ('channels_last', 'fold', 'graph', 'compile', *AUTOCAST)


@dataclass(frozen=True)
class InferenceMode:
    channels_last: bool = False
    fold: bool = False
    autocast: str | None = None
    graph: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, mode: str | InferenceMode) -> InferenceMode:
        if isinstance(mode, InferenceMode):
            return mode
        tokens = [t for t in str(mode).replace(' ', '').split('+') if t and t != 'eager']
        unknown = [t for t in tokens if t not in TOKENS]
        if unknown:
            raise ValueError(f'unknown inference option(s) {unknown} in mode {mode!r}; options: eager or a '
                             f'"+"-joined set of {", ".join(TOKENS)}')
        casts = [t for t in tokens if t in AUTOCAST]
        if len(casts) > 1:
            raise ValueError(f'mode {mode!r} names two autocast dtypes {casts}')
        return cls(channels_last='channels_last' in tokens, fold='fold' in tokens, autocast=casts[0] if casts else None,
                   graph='graph' in tokens, compile='compile' in tokens)

    @property
    def name(self) -> str:
        parts = [t for t in ('channels_last', 'fold') if getattr(self, t)]
        parts += [self.autocast] if self.autocast else []
        parts += [t for t in ('compile', 'graph') if getattr(self, t)]
        return '+'.join(parts) or 'eager'

    @property
    def exact(self) -> bool:
        """Computes in the network's own precision (equal to eager up to the rounding of other kernels)."""
        return self.autocast is None


# -- the RSC fold --------------------------------------------------------------------------------------------------


def _conv_like(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    w = conv.weight
    return nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     bias=conv.bias is not None, padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype)


class FoldedRSCBlock(nn.Module):
    """An RSC block as a plain residual block ``x + conv2(act(conv1(x)))`` over the full skip width: conv1 has zero
    weights for the skip channels the block does not read, conv2 zero filters (and bias) for the ones it does not
    write. Same function, no gather / scatter, (width / kept) times the MACs on each side."""

    def __init__(self, block: RSCBlock):
        super().__init__()
        c1, c2, width = block.conv1, block.conv2, block.width
        self.conv1 = _conv_like(c1, width, c1.out_channels)
        self.conv2 = _conv_like(c2, c2.in_channels, width)
        self.relu = block.relu
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.weight[:, block.in_idx.to(c1.weight.device)] = c1.weight
            if c1.bias is not None:
                self.conv1.bias.copy_(c1.bias)
            self.conv2.weight.zero_()
            self.conv2.weight[block.out_idx.to(c2.weight.device)] = c2.weight
            if c2.bias is not None:
                self.conv2.bias.zero_()
                self.conv2.bias[block.out_idx.to(c2.weight.device)] = c2.bias
        self.train(block.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(self.relu(self.conv1(x)))
        # The residual is a fresh tensor: adding the skip into it never touches a tensor anyone else holds.
        return r.add_(x) if not torch.is_grad_enabled() and r.dtype == x.dtype else x + r


def fold_rsc(net: nn.Module) -> nn.Module:
    """Replace every RSCBlock of ``net`` (in place; returned) by its :class:`FoldedRSCBlock`.

    A conversion for inference, one way: the folded network's state dict has full-width residual convs and no index
    buffers, so it no longer matches the pruning spec. Save the pruned network, fold a copy to run it."""
    for name, module in list(bare_model(net).named_modules()):
        if isinstance(module, RSCBlock):
            parent, _, child = name.rpartition('.')
            setattr(net.get_submodule(parent) if parent else net, child, FoldedRSCBlock(module))
    return net


# -- running a mode --------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class InferenceRunner:
    """``runner(x)``: ``net``'s forward on ``x`` in ``mode``, prepared (copied, folded, converted, compiled, captured)
    once on ``example``, whose device is the one it runs on. With ``graph`` every call must have the example's shape
    and dtype; the output is a copy of the graph's static output unless ``clone_output=False`` (then the next call
    overwrites it)."""

    def __init__(self, net: nn.Module, example: torch.Tensor, mode: str | InferenceMode = 'eager', warmup: int = 2,
                 compile_backend: str | None = None, clone_output: bool = True):
        self.mode = InferenceMode.parse(mode)
        self.device = example.device
        if self.mode.graph and self.device.type != 'cuda':
            raise ValueError(f'mode {self.mode.name!r}: CUDA graphs need a CUDA input, got one on {self.device}')
        if self.mode.autocast == 'fp16' and self.device.type == 'cpu' and not _cpu_fp16_autocast():
            raise ValueError('fp16 autocast is not available on this CPU build of torch; use bf16')
        net = copy.deepcopy(bare_model(net)).eval()
        if self.mode.fold:
            fold_rsc(net)
        net.to(self.device)
        if self.mode.channels_last:
            net.to(memory_format=torch.channels_last)
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = True
        self.net, self.clone_output = net, clone_output
        self._fn = net
        if self.mode.compile:
            kwargs = {'backend': compile_backend} if compile_backend else {}
            if self.mode.graph:
                kwargs['mode'] = 'reduce-overhead'
            self._fn = torch.compile(net, **kwargs)
        self._graph = None
        if self.mode.graph and not self.mode.compile:
            self._capture(example, warmup)
        else:
            for _ in range(warmup):
                self(example)
            sync(self.device)

    def _context(self, capturing: bool = False):
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad() if self.mode.compile or self.mode.graph else torch.inference_mode())
        if self.mode.autocast:
            # A captured graph must not reuse autocast's weight-cast cache across replays.
            stack.enter_context(torch.autocast(self.device.type, dtype=AUTOCAST[self.mode.autocast],
                                               cache_enabled=not self.mode.graph))
        if capturing:
            # Factory calls without a device (e.g. a flow warp's torch.arange) would copy from pageable host memory,
            # which a capture forbids; made on the GPU they become part of the graph.
            stack.enter_context(torch.device(self.device))
        return stack

    def _capture(self, example: torch.Tensor, warmup: int) -> None:
        self._static_in = example.detach().clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), self._context(capturing=True):
            for _ in range(max(warmup, 1)):  # cuDNN autotuning and lazy initialisation happen outside the capture
                self._fn(self._static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        sync(self.device)
        graph = torch.cuda.CUDAGraph()
        with self._context(capturing=True), torch.cuda.graph(graph):
            self._static_out = self._fn(self._static_in)
        self._graph = graph
        sync(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._graph is None:
            with self._context():
                return self._fn(x)
        s = self._static_in
        if x.shape != s.shape or x.dtype != s.dtype or x.device != s.device:
            raise ValueError(f'this CUDA graph was captured for {tuple(s.shape)} {s.dtype} on {s.device}, '
                             f'got {tuple(x.shape)} {x.dtype} on {x.device}: prepare a runner for that shape')
        s.copy_(x)
        self._graph.replay()
        return self._static_out.clone() if self.clone_output else self._static_out


def _cpu_fp16_autocast() -> bool:
    try:
        with torch.autocast('cpu', dtype=torch.float16):
            torch.nn.functional.conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 1, 1))
        return True
    except RuntimeError:
        return False


def time_forward(fn, x: torch.Tensor, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls ``fn(x)`` (CUDA events on a GPU, so the GPU's time is measured)."""
    device, out = x.device, []
    for _ in range(repeats):
        if device.type == 'cuda':
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x)
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(x)
            out.append(time.perf_counter() - t0)
    return out


def candidate_modes(net: nn.Module, device: torch.device, reduced_precision: bool = False,
                    compile: bool = False) -> list[str]:
    """The modes :func:`auto_select` tries by default on ``device`` for ``net`` (``fold`` only for a pruned one)."""
    layouts = ['', 'channels_last']
    folds = [''] + (['fold'] if any(isinstance(m, RSCBlock) for m in net.modules()) else [])
    casts = [''] + (['bf16', 'fp16'] if reduced_precision else [])
    runs = [''] + (['graph'] if device.type == 'cuda' else []) + (['compile'] if compile else [])
    modes = []
    for a in layouts:
        for b in folds:
            for c in casts:
                for d in runs:
                    modes.append('+'.join(t for t in (a, b, c, d) if t) or 'eager')
    return modes


@dataclass
class AutoChoice:
    """The fastest mode, its prepared runner, and per candidate its median seconds, max deviation from eager, or the
    error that ruled it out."""
    mode: str
    runner: InferenceRunner
    results: dict = field(default_factory=dict)


def auto_select(net: nn.Module, example: torch.Tensor, modes: list[str] | None = None, repeats: int = 5,
                tolerance: float | None = None, **runner_kwargs) -> AutoChoice:
    """Time each candidate mode on ``example`` (its device) and return the fastest whose output matches eager's.

    A mode in the network's precision must match within ``tolerance`` x the output's magnitude (default 1e-4, 1e-2
    on a GPU that lets cuDNN use TF32, where kernels of different layouts round differently); reduced-precision
    modes (only when listed in ``modes``) must give finite output. A mode that fails to prepare (say a network whose
    forward synchronises with the host cannot be captured) is reported and skipped."""
    device = example.device
    modes = modes or candidate_modes(net, device)
    if tolerance is None:
        tf32 = device.type == 'cuda' and torch.backends.cudnn.allow_tf32
        tolerance = 1e-2 if tf32 else 1e-4
    reference = InferenceRunner(net, example, 'eager', warmup=0)(example)
    scale = max(float(reference.abs().max()), 1e-12)
    best, best_s, best_runner, results = None, float('inf'), None, {}
    for name in modes:
        mode = InferenceMode.parse(name)
        try:
            runner = InferenceRunner(net, example, mode, **runner_kwargs)
            y = runner(example)
            err = float((y.float() - reference.float()).abs().max()) / scale
            if not torch.isfinite(y).all() or (mode.exact and err > tolerance):
                results[mode.name] = {'error': f'output differs from eager by {err:.2e} x its magnitude'}
                continue
            seconds = statistics.median(time_forward(runner, example, repeats))
        except Exception as e:  # noqa: BLE001  (a candidate that cannot run on this device is skipped, not fatal)
            results[mode.name] = {'error': f'{type(e).__name__}: {e}'}
            continue
        results[mode.name] = {'s': seconds, 'max_rel_error': err}
        if seconds < best_s:
            best, best_s, best_runner = mode.name, seconds, runner
        del runner
    if best is None:
        raise RuntimeError(f'no inference mode ran: {results}')
    return AutoChoice(best, best_runner, results)
