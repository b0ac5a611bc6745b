"""BasicVSR-uni: the forward-only (unidirectional) BasicVSR that the SSL paper prunes for online / low-latency VSR.

Why a separate arch: BasicSR ships only the bidirectional BasicVSR. This one keeps BasicVSR's building blocks (SPyNet,
``ConvResidualBlocks``, ``flow_warp``, imported from BasicSR, not copied) and its parameter names, minus everything the
backward branch needs: no ``backward_trunk`` and no ``fusion`` (the forward hidden state feeds ``upconv1`` directly). A
frame's output depends only on that frame and the past, so it can run on a live stream.
"""
import torch
from basicsr.archs.arch_util import flow_warp
from basicsr.archs.basicvsr_arch import ConvResidualBlocks
from basicsr.archs.spynet_arch import SpyNet
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F


@ARCH_REGISTRY.register()
class BasicVSRUni(nn.Module):
    """Unidirectional recurrent VSR network with BasicVSR's x4 reconstruction (two x2 pixel shuffles).

    Args:
        num_feat (int): Channels of the hidden state (the trunk width). Default: 64.
        num_block (int): Residual blocks in the forward trunk. Default: 15.
        spynet_path (str): Path to pretrained SPyNet weights. Default: None.
        num_feat_hr (int): Channels of the full-resolution ``upconv2`` / ``conv_hr`` path; BasicVSR fixes it at 64, so
            the default keeps the two archs' tensor shapes identical. Default: 64.
    """

    def __init__(self, num_feat=64, num_block=15, spynet_path=None, num_feat_hr=64):
        super().__init__()
        self.num_feat = num_feat
        self.spynet = SpyNet(spynet_path)
        # The recurrent input is cat([frame (3 channels), warped hidden state]).
        self.forward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.pixel_shuffle = nn.PixelShuffle(2)
        r2 = self.pixel_shuffle.upscale_factor ** 2
        self.upconv1 = nn.Conv2d(num_feat, num_feat * r2, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(num_feat, num_feat_hr * r2, 3, 1, 1, bias=True)
        self.conv_hr = nn.Conv2d(num_feat_hr, num_feat_hr, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat_hr, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    @property
    def scale(self) -> int:
        """Total upscale factor: two pixel-shuffle stages."""
        return self.pixel_shuffle.upscale_factor ** 2

    def get_flow(self, x):
        """Flow from frame i-1 to frame i, i = 1..n-1 (what warps the previous hidden state onto frame i)."""
        b, n, c, h, w = x.size()
        x_prev = x[:, :-1].reshape(-1, c, h, w)
        x_next = x[:, 1:].reshape(-1, c, h, w)
        return self.spynet(x_next, x_prev).view(b, n - 1, 2, h, w)

    def forward(self, x):
        """Args: x (b, n, c, h, w) low-resolution frames. Returns (b, n, c, scale*h, scale*w)."""
        b, n, _, h, w = x.size()
        flows = self.get_flow(x) if n > 1 else None
        out_l = []
        feat_prop = x.new_zeros(b, self.num_feat, h, w)
        for i in range(n):
            x_i = x[:, i]
            if i > 0:
                feat_prop = flow_warp(feat_prop, flows[:, i - 1].permute(0, 2, 3, 1))
            feat_prop = self.forward_trunk(torch.cat([x_i, feat_prop], dim=1))

            out = self.lrelu(self.pixel_shuffle(self.upconv1(feat_prop)))
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
            out = self.lrelu(self.conv_hr(out))
            out = self.conv_last(out)
            out = out + F.interpolate(x_i, scale_factor=self.scale, mode='bilinear', align_corners=False)
            out_l.append(out)
        return torch.stack(out_l, dim=1)
