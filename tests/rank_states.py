"""Comparison of what DDP ranks hold (weights, optimizer and scheduler state), used by the DDP tests of both hosts."""
import torch


def assert_same(a, b, where: str = '') -> None:
    """``a`` and ``b`` are equal all the way down: same keys, same lengths, tensors bit-identical (DDP ranks apply the
    same all-reduced gradient to the same weights, so any difference is a rank that left the group)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f'{where}: keys differ'
        for k in a:
            assert_same(a[k], b[k], f'{where}/{k}')
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f'{where}: lengths differ'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, f'{where}: shape/dtype'
        assert torch.equal(a, b), f'{where}: ranks differ (max |diff| {(a.double() - b.double()).abs().max():.3g})'
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'
