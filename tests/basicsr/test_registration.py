"""Registration in BasicSR's registries, BasicVSRUni, the import hook behind BasicSR's own entry points, and use of the
registered losses by another BasicSR project."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from bsr_helpers import REPO, base_options, merge, write_options

import ssl_plugin  # noqa: F401
from ssl_plugin.basicsr_plugin import autoload, register

register()
from basicsr.archs import build_network  # noqa: E402
from basicsr.archs.basicvsr_arch import BasicVSR  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY  # noqa: E402

from ssl_plugin.core import describe  # noqa: E402

OURS = {MODEL_REGISTRY: ['SSLVideoRecurrentModel'], LOSS_REGISTRY: ['SIRLoss', 'TFLoss'],
        ARCH_REGISTRY: ['BasicVSRUni']}


def test_parts_are_registered_under_unique_names():
    for registry, names in OURS.items():
        for name in names:
            assert registry.get(name).__module__.startswith('ssl_plugin.'), name
    # BasicSR's own entries are untouched.
    assert MODEL_REGISTRY.get('VideoRecurrentModel').__module__.startswith('basicsr.')
    assert ARCH_REGISTRY.get('BasicVSR') is BasicVSR
    register()   # idempotent: a second call must not re-register (BasicSR would raise on a duplicate)


def test_basicvsr_uni_is_forward_only_basicvsr():
    uni = build_network({'type': 'BasicVSRUni', 'num_feat': 8, 'num_block': 2})
    bi = BasicVSR(num_feat=8, num_block=2)
    uni_shapes = {k: v.shape for k, v in uni.state_dict().items()}
    bi_shapes = {k: v.shape for k, v in bi.state_dict().items()}
    # Same names and shapes as BasicVSR wherever they exist; nothing of the backward branch or the fusion.
    assert all(bi_shapes[k] == s for k, s in uni_shapes.items())
    assert set(bi_shapes) - set(uni_shapes) == {k for k in bi_shapes if k.startswith(('backward_trunk.', 'fusion.'))}
    assert describe(uni).hidden == {'forward': 'forward_trunk'}
    lq = torch.rand(1, 4, 3, 36, 36)
    with torch.no_grad():
        out = uni(lq)
        assert out.shape == (1, 4, 3, 144, 144)
        # Causal: frame i's output ignores later frames.
        changed = lq.clone()
        changed[:, -1] = torch.rand_like(changed[:, -1])
        torch.testing.assert_close(uni(changed)[:, :-1], out[:, :-1])


def _python(code, site, cwd, *args, env=None):
    """A fresh interpreter whose site-packages include ``site`` (where the hook's .pth was installed)."""
    boot = f'import site; site.addsitedir({str(site)!r})\n' + textwrap.dedent(code)
    full_env = {k: v for k, v in os.environ.items() if k != autoload.DISABLE_ENV}
    full_env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore', **(env or {}))
    return subprocess.run([sys.executable, '-c', boot, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope='module')
def hook_site(tmp_path_factory):
    site = tmp_path_factory.mktemp('site')
    path = autoload.install(str(site))
    assert os.path.basename(path) == autoload.PTH_NAME
    return site


CHECK = """
import sys
import basicsr   # no ssl_plugin import anywhere in this code
from basicsr.utils.registry import MODEL_REGISTRY, LOSS_REGISTRY, ARCH_REGISTRY
print('registered', 'SSLVideoRecurrentModel' in MODEL_REGISTRY, 'SIRLoss' in LOSS_REGISTRY,
      'BasicVSRUni' in ARCH_REGISTRY, 'ssl_plugin' in sys.modules)
"""


def test_importing_basicsr_registers_the_plugin(hook_site, tmp_path):
    proc = _python(CHECK, hook_site, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'registered True True True True' in proc.stdout


def test_environment_variable_turns_the_hook_off(hook_site, tmp_path):
    code = "from ssl_plugin import compat; compat.shim_functional_tensor()\n" + CHECK
    proc = _python(code, hook_site, tmp_path, env={autoload.DISABLE_ENV: '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'registered False False False True' in proc.stdout


def test_basicsr_own_pipelines_train_and_test_through_the_hook(hook_site, tiny_data, tmp_path):
    """BasicSR's own train_pipeline / test_pipeline (what basicsr/train.py and basicsr/test.py run), unchanged: a
    bidirectional BasicVSR on REDSRecurrentDataset crops, pruned mid-run, validated on CPU, then evaluated."""
    opt = merge(base_options(tiny_data, 'stock'), train__total_iter=5, val__val_freq=5,
                logger__save_checkpoint_freq=5)
    yml = write_options(tmp_path, opt)
    proc = _python(f'from basicsr.train import train_pipeline; train_pipeline({str(tmp_path)!r})', hook_site,
                   tmp_path, '-opt', str(yml))
    log = '\n'.join(p.read_text() for p in (tmp_path / 'experiments' / 'stock').glob('train_*.log'))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'SSL: sparsity stage finished at iter 4' in log and '# psnr:' in log
    test_opt = {
        'name': 'stock_eval', 'model_type': 'SSLVideoRecurrentModel', 'scale': opt['scale'], 'num_gpu': 0,
        'datasets': {'test_1': opt['datasets']['val']}, 'network_g': opt['network_g'],
        'path': {'pretrain_network_g': str(tmp_path / 'experiments' / 'stock' / 'models' / 'net_g_latest.pth')},
        'val': {'save_img': False, 'suffix': None, 'metrics': opt['val']['metrics']},
    }
    proc = _python(f'from basicsr.test import test_pipeline; test_pipeline({str(tmp_path)!r})', hook_site, tmp_path,
                   '-opt', str(write_options(tmp_path, test_opt)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    test_log = '\n'.join(p.read_text() for p in (tmp_path / 'results' / 'stock_eval').glob('test_*.log'))
    assert '(pruned)' in test_log and '# psnr:' in test_log


OTHER_PROJECT = '''
"""A separate BasicSR project: its own model builds ssl_plugin's losses through BasicSR's build_loss."""
import ssl_plugin  # noqa: F401  (registers SIRLoss / TFLoss when basicsr is imported)
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss

from ssl_plugin.core import HiddenStateRecorder, describe, insert_scaling_factors, teacher_hidden_states
from ssl_plugin.core.sir import SparsityRegularizer


def run():
    net = build_network({"type": "BasicVSRUni", "num_feat": 8, "num_block": 1, "num_feat_hr": 8})
    teacher = build_network({"type": "BasicVSRUni", "num_feat": 8, "num_block": 1, "num_feat_hr": 8})
    gammas = insert_scaling_factors(net, describe(net))
    sir = build_loss({"type": "SIRLoss", "loss_weight": 2.0})
    tf = build_loss({"type": "TFLoss", "loss_weight": 1.0, "distance": "l2"})
    reg = SparsityRegularizer({"upconv1": torch.tensor([0, 1])}, delta=0.1, interval=1, ceiling=0.1,
                              stabilize_iter=0)
    reg.step()
    l_sir = sir(reg, gammas)   # 2 * 1/2 * 0.1 * (1 + 1) with every gamma at 1
    lq = torch.rand(1, 2, 3, 36, 36)
    with HiddenStateRecorder(net) as rec:
        net(lq)
    l_tf = tf(rec.states, teacher_hidden_states(teacher, lq))
    l_tf.backward()
    print("losses", type(sir).__name__, type(tf).__name__, round(float(l_sir), 6), float(l_tf) > 0,
          net.forward_trunk.main[0].weight.grad is not None)
'''


def test_another_basicsr_project_builds_the_losses(tmp_path):
    pkg = tmp_path / 'other_project'
    pkg.mkdir()
    (pkg / '__init__.py').write_text(OTHER_PROJECT)
    env = {k: v for k, v in os.environ.items() if k != autoload.DISABLE_ENV}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, '-c', 'import other_project; other_project.run()'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'losses SIRLoss TFLoss 0.2 True True' in proc.stdout

