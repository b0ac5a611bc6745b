"""Operators the hosts expect from compiled extensions, written on what torch / torchvision ship."""
from .modulated_deform_conv import ModulatedDeformConv2d, ModulatedDeformConv2dPack, modulated_deform_conv2d

__all__ = ['ModulatedDeformConv2d', 'ModulatedDeformConv2dPack', 'modulated_deform_conv2d']
