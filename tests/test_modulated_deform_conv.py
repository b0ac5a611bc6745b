"""ssl_plugin.ops: mmcv's modulated deformable convolution on torchvision, against a direct computation."""
from __future__ import annotations

import pytest
import torch

import ssl_plugin  # noqa: F401  (installs the mmcv.ops stand-in on mmcv-lite)
from ssl_plugin.ops import ModulatedDeformConv2d, ModulatedDeformConv2dPack, modulated_deform_conv2d

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def _bilinear(img, py, px):
    """Sample ``img`` (n, g, c, h, w) at real positions ``py``, ``px`` (n, g, ...): each of the four neighbours
    counts only inside the frame (zero outside). Returns (n, g, c, ...)."""
    n, g, c, h, w = img.shape
    flat = img.reshape(n, g, c, h * w)
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    out = 0
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yi, xi = y0 + dy, x0 + dx
            inside = ((yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)).to(img.dtype)
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
            picked = torch.gather(flat, 3, idx.reshape(n, g, 1, -1).expand(-1, -1, c, -1))
            out = out + picked.reshape(n, g, c, *py.shape[2:]) * (wy * wx * inside).unsqueeze(2)
    return out


def reference(x, offset, mask, weight, bias, stride, padding, dilation, groups, dg):
    """DCNv2 written out: for every output pixel and kernel tap, the input sampled at the regular grid position plus
    that tap's (dy, dx) offset, times its mask, then a grouped weighted sum."""
    n, c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    k = kh * kw
    off = offset.reshape(n, dg, k, 2, ho, wo)
    tap_y = (torch.arange(kh, dtype=x.dtype, device=x.device) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=x.dtype, device=x.device) * dilation[1]).repeat(kh)
    grid_y = torch.arange(ho, dtype=x.dtype, device=x.device) * stride[0] - padding[0]
    grid_x = torch.arange(wo, dtype=x.dtype, device=x.device) * stride[1] - padding[1]
    py = grid_y.view(1, 1, 1, ho, 1) + tap_y.view(1, 1, k, 1, 1) + off[:, :, :, 0]
    px = grid_x.view(1, 1, 1, 1, wo) + tap_x.view(1, 1, k, 1, 1) + off[:, :, :, 1]
    cols = _bilinear(x.reshape(n, dg, c // dg, h, w), py, px)            # n, dg, c/dg, k, ho, wo
    cols = cols * mask.reshape(n, dg, 1, k, ho, wo)
    cols = cols.reshape(n, groups, c // groups, k, ho, wo)
    wg = weight.reshape(groups, out_c // groups, c // groups, k)
    out = torch.einsum('ngckyx,gock->ngoyx', cols, wg).reshape(n, out_c, ho, wo)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


CASES = {  # in, out, kernel, stride, padding, dilation, groups, deform_groups, bias
    '3x3': (4, 6, 3, 1, 1, 1, 1, 1, True),
    'groups-dg': (8, 4, 3, 1, 1, 1, 2, 4, True),
    'stride-dilation': (4, 4, 3, 2, 2, 2, 1, 2, False),
    '1x3-no-pad': (6, 3, (1, 3), 1, 0, 1, 3, 1, True),
}


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', list(CASES), ids=list(CASES))
def test_forward_and_backward_match_direct_sampling(case, device):
    cin, cout, ksize, stride, padding, dilation, groups, dg, bias = CASES[case]
    torch.manual_seed(0)
    conv = ModulatedDeformConv2d(cin, cout, ksize, stride, padding, dilation, groups, dg, bias).double().to(device)
    if bias:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, cin, 7, 9, dtype=torch.float64, device=device, requires_grad=True)
    kh, kw = conv.kernel_size
    ho = (7 + 2 * conv.padding[0] - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
    wo = (9 + 2 * conv.padding[1] - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
    # Offsets up to 4 px: many taps sample between pixels, some fall (partly) outside the frame.
    offset = (torch.rand(2, 2 * dg * kh * kw, ho, wo, dtype=torch.float64, device=device) * 8 - 4).requires_grad_()
    mask = torch.rand(2, dg * kh * kw, ho, wo, dtype=torch.float64, device=device, requires_grad=True)

    out = conv(x, offset, mask)
    want = reference(x, offset, mask, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, groups, dg)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)

    g = torch.randn_like(out)
    leaves = [x, offset, mask, conv.weight] + ([conv.bias] if bias else [])
    got_grads = torch.autograd.grad(out, leaves, g)
    want_grads = torch.autograd.grad(want, leaves, g)
    for name, a, b in zip(['input', 'offset', 'mask', 'weight', 'bias'], got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8, msg=name)


def test_zero_offsets_and_unit_mask_are_a_plain_convolution():
    torch.manual_seed(1)
    conv = ModulatedDeformConv2d(4, 6, 3, padding=1, groups=2, deform_groups=2)
    x = torch.randn(1, 4, 8, 8)
    out = conv(x, torch.zeros(1, 2 * 2 * 9, 8, 8), torch.ones(1, 2 * 9, 8, 8))
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1, groups=2))


def test_mmcv_names_initialisation_and_strict_loading():
    torch.manual_seed(2)
    pack = ModulatedDeformConv2dPack(8, 4, 3, padding=1, deform_groups=2)
    assert (pack.kernel_size, pack.stride, pack.padding, pack.dilation) == ((3, 3), (1, 1), (1, 1), (1, 1))
    assert (pack.groups, pack.deform_groups, pack.transposed, pack.output_padding) == (1, 2, False, (0,))
    assert sorted(pack.state_dict()) == ['bias', 'conv_offset.bias', 'conv_offset.weight', 'weight']
    assert pack.conv_offset.out_channels == 2 * 3 * 9
    bound = 1 / (8 * 9) ** 0.5  # mmcv: U(-1/sqrt(in * kh * kw), ...), zero bias, zero offset conv
    assert pack.weight.abs().max() <= bound and pack.weight.abs().max() > bound / 2
    assert not pack.bias.any() and not pack.conv_offset.weight.any() and not pack.conv_offset.bias.any()
    # A fresh pack is a plain convolution with mask sigmoid(0) = 0.5.
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(pack(x), 0.5 * torch.nn.functional.conv2d(x, pack.weight, pack.bias, padding=1))

    other = ModulatedDeformConv2dPack(8, 4, 3, padding=1, deform_groups=2)
    other.load_state_dict(pack.state_dict(), strict=True)
    assert other.state_dict()._metadata['']['version'] == 2  # mmcv's version of the module
    with pytest.warns(DeprecationWarning, match='deform_groups'):
        assert ModulatedDeformConv2d(8, 4, 3, deformable_groups=4).deform_groups == 4
    assert ModulatedDeformConv2d(4, 4, 1, bias=False).bias is None


@pytest.mark.parametrize('bad, match', [
    (dict(offset_channels=17), r'offset has 17 channels, deform_groups=1 with a 3x3 kernel needs 18'),
    (dict(mask_channels=8), r'mask has 8 channels'),
    (dict(groups=3), r'groups=3 expects 12 input channels, the input has 4'),
    (dict(deform_groups=3), r'not divisible by deform_groups=3'),
])
def test_inconsistent_shapes_are_named(bad, match):
    dg = bad.get('deform_groups', 1)
    weight = torch.randn(6, 4 // bad.get('groups', 1) if 4 % bad.get('groups', 1) == 0 else 4, 3, 3)
    x = torch.randn(1, 4, 5, 5)
    offset = torch.zeros(1, bad.get('offset_channels', 18 * dg), 5, 5)
    mask = torch.ones(1, bad.get('mask_channels', 9 * dg), 5, 5)
    with pytest.raises(ValueError, match=match):
        modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1, bad.get('groups', 1), dg)


def test_macs_of_a_deformable_conv_are_counted_like_a_convolution():
    """torch's FLOP counter has no formula for torchvision's deform_conv2d; without ours BasicVSR++'s alignment would
    count 0 MACs and its MAC ratio would be overstated."""
    from ssl_plugin.core import count_macs

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = ModulatedDeformConv2d(8, 6, 3, padding=1, groups=2, deform_groups=2)

        def forward(self, x):
            return self.dcn(x, torch.zeros(1, 2 * 2 * 9, 5, 7), torch.ones(1, 2 * 9, 5, 7))

    assert count_macs(Net(), torch.randn(1, 8, 5, 7)) == 5 * 7 * 6 * (8 // 2) * 9
