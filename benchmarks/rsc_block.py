"""Where does a pruned residual block's time go? One BasicVSR residual block, dense vs RSC, split into its parts.

For each kept width k (the same k for the block's input channels, filters and output channels) it times: the dense
block, the RSC block, its gather (``RSCBlock.gather``: channel planes in NCHW, pixel rows in channels_last), its two
convs on a contiguous k-channel tensor (the lower bound any RSC layout can reach), its scatter (``RSCBlock.scatter``,
in place as in inference), and a bare k -> k conv, and reports convolution throughput so
that widths the conv backend handles badly (not a multiple of 8 or 16) stand out.

    python benchmarks/rsc_block.py                        # CPU, all cores
    python benchmarks/rsc_block.py --device cuda --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

import ssl_plugin  # noqa: F401  (host compatibility shims)
from ssl_plugin.core import RSCBlock


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--width', type=int, default=64, help='dense block width (BasicVSR num_feat)')
    p.add_argument('--kept', type=int, nargs='+', default=None, help='kept widths (default: a sweep)')
    p.add_argument('--size', type=int, nargs=2, default=[64, 64], metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--repeats', type=int, default=50)
    p.add_argument('--channels-last', action='store_true')
    return p.parse_args(argv)


def median_ms(fn, device, repeats, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


class DenseBlock(nn.Module):
    """BasicSR's ResidualBlockNoBN at res_scale 1 (what an unpruned BasicVSR trunk runs)."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2, self.relu = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(inplace=True)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x)))


def main(argv=None):
    args = parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    c, (h, w) = args.width, args.size
    kept = args.kept or sorted({c, c * 7 // 8, c * 3 // 4, c * 3 // 4 - 3, c // 2 + 13, c // 2 + 12, c // 2,
                                c // 2 - 3, c // 4 + 3, c // 4}, reverse=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, c, h, w, generator=gen).to(device, memory_format=fmt)
    dense = DenseBlock(c).to(device, memory_format=fmt).eval()
    r = args.repeats
    where = f'{device.type} x{torch.get_num_threads()} threads' if device.type == 'cpu' else \
        torch.cuda.get_device_name(device)
    print(f'residual block, width {c}, input {tuple(x.shape)}, {where}, torch {torch.__version__}, '
          f'{"channels_last" if args.channels_last else "NCHW"}, median of {r}')
    with torch.inference_mode():
        t_dense = median_ms(lambda: dense(x), device, r)
        print(f'{"k":>4}{"MAC ratio":>10}{"dense ms":>10}{"RSC ms":>9}{"speedup":>9}{"sp/MAC":>8}'
              f'{"gather":>8}{"convs":>8}{"scatter":>9}{"conv k->k GMAC/s":>18}')
        for k in kept:
            idx = torch.sort(torch.randperm(c, generator=gen)[:k]).values
            block = RSCBlock(nn.Conv2d(k, k, 3, 1, 1), nn.Conv2d(k, k, 3, 1, 1), nn.ReLU(inplace=True), idx, idx,
                             c, inplace=True).to(device, memory_format=fmt).eval()
            hk = block.gather(x).contiguous(memory_format=fmt)
            res = block.conv2(block.relu(block.conv1(hk)))
            t_rsc = median_ms(lambda: block(x), device, r)
            t_gather = median_ms(lambda: block.gather(x), device, r)
            t_convs = median_ms(lambda: block.conv2(block.relu(block.conv1(hk))), device, r)
            t_scatter = median_ms(lambda: block.scatter(x, res), device, r)
            t_conv = median_ms(lambda: block.conv1(hk), device, r)
            mac_ratio = (c * c) / (k * k)
            gmacs = args.batch * k * k * 9 * h * w / (t_conv * 1e-3) / 1e9
            print(f'{k:>4}{mac_ratio:>10.2f}{t_dense:>10.3f}{t_rsc:>9.3f}{t_dense / t_rsc:>9.2f}'
                  f'{t_dense / t_rsc / mac_ratio:>8.2f}{t_gather:>8.3f}{t_convs:>8.3f}{t_scatter:>9.3f}{gmacs:>18.1f}')


if __name__ == '__main__':
    main()
