"""ssl_plugin.compat: each shim is needed on this stack (the host fails without it) and fixes that failure.

The "without" half runs in a fresh interpreter that never imports ssl_plugin, so no shim is active there; the
"with" half is the same code after ``import ssl_plugin``.
"""

import importlib
import importlib.machinery
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ssl_plugin import compat

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT_S = 300


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this venv (ssl_plugin importable, torch's load safety at defaults)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    for var in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
        env.pop(var, None)
    # `make setup` installs the BasicSR import hook, which applies the shims whenever basicsr is imported; switch it
    # off so that "without ssl_plugin" really means without the shims (import ssl_plugin still applies them).
    env["SSL_PLUGIN_DISABLE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def test_no_global_switch_of_torch_load_safety():
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ


def test_apply_is_idempotent():
    before = {name: sys.modules.get(name) for name in ("torchvision.transforms.functional_tensor", "mmcv.ops")}
    assert compat.apply() == compat.applied
    assert not compat.shim_functional_tensor()
    assert not compat.shim_mmcv_ops()
    assert not compat.shim_mmengine_weights_only()
    assert {name: sys.modules.get(name) for name in before} == before


# ----------------------------------------------------------------------------------------------------------------------
# torchvision.transforms.functional_tensor for basicsr 1.4.2
# ----------------------------------------------------------------------------------------------------------------------

BASICSR_IMPORT = """
from basicsr.utils.registry import ARCH_REGISTRY
print(ARCH_REGISTRY.get('BasicVSR').__name__)
"""


def torchvision_ships_functional_tensor() -> bool:
    import torchvision.transforms

    return importlib.machinery.PathFinder.find_spec("functional_tensor", torchvision.transforms.__path__) is not None


def test_basicsr_import_fails_without_functional_tensor_shim(tmp_path):
    if torchvision_ships_functional_tensor():
        pytest.skip("this torchvision still ships transforms.functional_tensor; the shim is not needed")
    result = run_python(BASICSR_IMPORT, tmp_path)
    assert result.returncode != 0
    assert "No module named 'torchvision.transforms.functional_tensor'" in result.stderr


def test_basicsr_imports_after_ssl_plugin(tmp_path):
    result = run_python("import ssl_plugin\n" + BASICSR_IMPORT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "BasicVSR"


def test_functional_tensor_stand_in_is_torchvisions_rgb_to_grayscale():
    from torchvision.transforms import functional

    stand_in = importlib.import_module("torchvision.transforms.functional_tensor")
    assert stand_in.rgb_to_grayscale is functional.rgb_to_grayscale
    image = torch.rand(3, 36, 36)
    gray = stand_in.rgb_to_grayscale(image, num_output_channels=3)
    assert gray.shape == image.shape and torch.equal(gray[0], gray[1])
    assert importlib.util.find_spec("torchvision.transforms.functional_tensor") is not None


# ----------------------------------------------------------------------------------------------------------------------
# mmcv.ops stand-in for mmagic on mmcv-lite
# ----------------------------------------------------------------------------------------------------------------------

needs_mmcv_standin = pytest.mark.skipif(
    compat._mmcv_has_compiled_ops() is not False, reason="mmcv is missing or has compiled ops: no stand-in needed"
)
DCN_MESSAGE = "TDAN need mmcv built with compiled ops (mmcv._ext is missing; install full mmcv"


def build_mmagic_model(cfg: dict):
    """Build through mmagic's MODELS registry under default scope 'mmagic', as a config run does."""
    from mmagic.registry import MODELS
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmagic"):
        return MODELS.build(cfg)


# MODELS lazily imports mmagic.models on the first build, so even a non-DCN model fails without the stand-in.
MMAGIC_BUILD = """
from mmagic.registry import MODELS
from mmengine.registry import init_default_scope
init_default_scope('mmagic')
print(type(MODELS.build(dict(type='BasicVSRNet', mid_channels=8, num_blocks=1, spynet_pretrained=None))).__name__)
"""


@needs_mmcv_standin
def test_mmagic_build_fails_without_mmcv_ops_stand_in(tmp_path):
    pytest.importorskip("mmagic")
    result = run_python(MMAGIC_BUILD, tmp_path)
    assert result.returncode != 0
    assert "No module named 'mmcv._ext'" in result.stderr


def test_mmagic_build_works_after_ssl_plugin(tmp_path):
    pytest.importorskip("mmagic")
    result = run_python("import ssl_plugin\n" + MMAGIC_BUILD, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "BasicVSRNet"


@needs_mmcv_standin
def test_mmagic_basicvsrnet_builds_and_runs_with_stand_in():
    pytest.importorskip("mmagic")
    assert sys.modules["mmcv.ops"].__ssl_plugin_standin__
    channels, blocks, frames, size = 8, 1, 2, 32
    net = build_mmagic_model(
        dict(type="BasicVSRNet", mid_channels=channels, num_blocks=blocks, spynet_pretrained=None)
    )
    assert type(net).__name__ == "BasicVSRNet"
    with torch.no_grad():
        out = net(torch.rand(1, frames, 3, size, size))
    scale = 4  # BasicVSRNet's fixed upsampling factor
    assert out.shape == (1, frames, 3, size * scale, size * scale)


DCN_MODELS = [
    dict(type="BasicVSRPlusPlusNet", mid_channels=8, num_blocks=1, spynet_pretrained=None),
    dict(type="EDVRNet", in_channels=3, out_channels=3, mid_channels=8, num_frames=3, deform_groups=1,
         num_blocks_extraction=1, num_blocks_reconstruction=1, center_frame_idx=1),
    # IconVSR's fusions expect its EDVR's fixed 64 channels
    dict(type="IconVSRNet", mid_channels=64, num_blocks=1, spynet_pretrained=None, edvr_pretrained=None),
]


@needs_mmcv_standin
@pytest.mark.parametrize("cfg", DCN_MODELS, ids=lambda cfg: cfg["type"])
def test_dcn_models_build_on_the_stand_in(cfg):
    pytest.importorskip("mmagic")
    from ssl_plugin.ops import ModulatedDeformConv2d

    net = build_mmagic_model(cfg)
    assert any(isinstance(m, ModulatedDeformConv2d) for m in net.modules())


@needs_mmcv_standin
def test_edvr_trains_through_the_stand_in_dcn():
    """EDVR's PCD alignment runs forward and backward through the stand-in's modulated deformable convolution
    (BasicVSR++ does in tests/test_basicvsrpp.py)."""
    pytest.importorskip("mmagic")
    from ssl_plugin.ops import ModulatedDeformConv2d

    net = build_mmagic_model(DCN_MODELS[1])
    dcns = [m for m in net.modules() if isinstance(m, ModulatedDeformConv2d)]
    torch.manual_seed(0)
    for m in dcns:  # mmagic zero-initialises the offset convs; random offsets make the DCN really deform
        torch.nn.init.normal_(m.conv_offset.weight, std=0.05)
    out = net(torch.rand(1, 3, 3, 16, 16))
    assert out.shape == (1, 3, 64, 64)
    out.mean().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in dcns)


@needs_mmcv_standin
def test_tdan_fails_with_a_clear_message():
    pytest.importorskip("mmagic")
    with pytest.raises(compat.MissingCompiledOpsError) as info:
        build_mmagic_model(dict(type="TDANNet"))
    assert DCN_MESSAGE in str(info.value)
    assert "BasicVSR, BasicVSR++, EDVR and IconVSR work without them" in str(info.value)


@needs_mmcv_standin
def test_stand_in_ops_fail_on_use_not_on_import():
    from mmcv.ops import deform_conv2d, modulated_deform_conv2d
    from mmcv.ops.upfirdn2d import upfirdn2d

    from ssl_plugin.ops import modulated_deform_conv2d as provided

    assert modulated_deform_conv2d is provided  # the real op, not a placeholder
    with pytest.raises(compat.MissingCompiledOpsError, match="mmcv._ext is missing"):
        deform_conv2d(torch.zeros(1))
    with pytest.raises(compat.MissingCompiledOpsError, match="StyleGAN"):
        upfirdn2d(torch.zeros(1))
    assert not hasattr(deform_conv2d, "some_attribute")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mmcv.ops.nms")  # not a name mmagic imports: no silent placeholder


# ----------------------------------------------------------------------------------------------------------------------
# mmengine resume under torch.load(weights_only=True)
# ----------------------------------------------------------------------------------------------------------------------

RESUME_SCRIPT = """
import json, sys
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset


class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, x, y, mode='tensor'):
        out = self.lin(x)
        return dict(loss=((out - y) ** 2).mean()) if mode == 'loss' else out


class Pairs(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(x=torch.randn(2, generator=g), y=torch.randn(1, generator=g))


def runner(name, max_iters, resume, seed):
    # Own experiment names: same-second runners would otherwise share one MessageHub (named by timestamp).
    return Runner(
        model=Toy(), work_dir='work', experiment_name=name, default_scope='mmengine', randomness=dict(seed=seed),
        resume=resume,
        train_dataloader=dict(dataset=Pairs(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                              num_workers=0, collate_fn=dict(type='default_collate')),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=0.01)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1, 3], by_epoch=False),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)))


first = runner('first', 2, False, seed=0)
first.train()
first_losses = first.message_hub.get_scalar('train/loss').data[0].tolist()
second = runner('second', 4, True, seed=1)  # another seed: without a real resume its first losses would differ
second.train()
assert second.message_hub is not first.message_hub
print(json.dumps(dict(
    iter=second.iter, first_losses=first_losses,
    second_losses=second.message_hub.get_scalar('train/loss').data[0].tolist())))
"""


def test_mmengine_resume_fails_without_weights_only_shim(tmp_path):
    pytest.importorskip("mmengine")
    result = run_python(RESUME_SCRIPT, tmp_path)
    assert result.returncode != 0
    assert "UnpicklingError" in result.stderr
    assert "HistoryBuffer" in result.stderr


def test_mmengine_resume_works_with_weights_only_shim(tmp_path):
    pytest.importorskip("mmengine")
    result = run_python("import ssl_plugin\n" + RESUME_SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["iter"] == 4
    assert len(report["first_losses"]) == 2 and len(report["second_losses"]) == 4
    assert report["second_losses"][:2] == report["first_losses"]  # history came back from the checkpoint


class _CallsGetattr:
    """Pickles as getattr(HistoryBuffer, '_set_default_statistics'): not a statistics method."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer

        return getattr, (HistoryBuffer, "_set_default_statistics")


class _NotAllowListed:
    pass


def test_weights_only_safety_stays_on(tmp_path):
    pytest.importorskip("mmengine")
    path = tmp_path / "evil.pth"
    torch.save({"x": _CallsGetattr()}, path)
    with pytest.raises(pickle.UnpicklingError, match="refused getattr"):
        torch.load(path)
    torch.save({"x": _NotAllowListed()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
