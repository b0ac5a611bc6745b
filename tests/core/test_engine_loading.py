"""check_loaded: a network's tensors against the state dict(s) loaded into it (both hosts' loaders use it)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_plugin.core.loading import check_loaded


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1))


def test_all_loaded_passes_also_from_several_files_in_turn():
    own = _net().state_dict()
    check_loaded(own, [('a', own)])
    first = {k: v for k, v in own.items() if k.startswith('0.')}
    second = {k: v for k, v in own.items() if k.startswith('1.')}
    check_loaded(own, [('a', first), ('b', second)])  # together every tensor loaded


def test_missing_unexpected_and_mismatched_are_named():
    own = _net().state_dict()
    with pytest.raises(ValueError, match=r"^f.pth: 4 of the network's 4 tensors were not loaded \(missing, e\.g\. 0\."
                                         r"weight.*f.pth: its keys look like net\.0\.weight"):
        check_loaded(own, [('f.pth', {})], foreign={'f.pth': ['net.0.weight']})
    with pytest.raises(ValueError, match=r'holds 1 tensors the network does not have \(e\.g\. 2\.weight\)'):
        check_loaded(own, [('f.pth', dict(own, **{'2.weight': torch.zeros(1)}))])
    wrong = dict(own, **{'1.weight': torch.zeros(3, 4, 1, 1)})
    with pytest.raises(ValueError, match=r'shapes do not fit .*1\.weight: checkpoint \(3, 4, 1, 1\) vs network '
                                         r'\(2, 4, 1, 1\)'):
        check_loaded(own, [('f.pth', wrong)], strict=False)  # shapes: an error even when not strict
    check_loaded(own, [('f.pth', {})], strict=False)  # not strict: missing keys are the caller's choice
