"""Common test set-up: host compatibility shims, a small CPU thread pool, fixed seeds, no plot windows."""

import os
import random

os.environ.setdefault("MPLBACKEND", "Agg")  # tests that plot must never need a display

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

import ssl_plugin  # noqa: E402,F401  (applies ssl_plugin.compat before any test imports basicsr / mmagic)

torch.set_num_threads(2)  # the suite must fit in minutes on 2 CPU cores
# CPU timings of the first torch call vary a lot; a per-example deadline would make property tests flaky.
settings.register_profile("ssl_plugin", deadline=None)
settings.load_profile("ssl_plugin")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same random state, whatever ran before it."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


#: Frames per clip of ``bvpp_bikes`` (the BasicVSR++ end-to-end tests of both hosts train on whole clips).
BVPP_CLIP_FRAMES = 2


@pytest.fixture(scope='session')
def bvpp_bikes(tmp_path_factory):
    """Two 2-frame clips of bikes, GT 256 px (LR 64, the least BasicVSR++ accepts): 000 validates, 001 trains. One
    data set, in both hosts' layouts, for the BasicVSR++ end-to-end tests of BasicSR and MMagic."""
    from ssl_plugin.tools.clips import clip_path
    from ssl_plugin.tools.make_dataset import build_dataset

    root = tmp_path_factory.mktemp('bvpp_bikes')
    build_dataset(clip_path('bikes'), root, scale=4, degradations=['BI'], crop=(192, 8, 256, 256),
                  end=2 * BVPP_CLIP_FRAMES, clip_len=BVPP_CLIP_FRAMES, names=['000', '001'])
    return root
