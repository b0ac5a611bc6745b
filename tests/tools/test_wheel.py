"""Installed as users install it: the wheel (not an editable install) in a fresh virtual environment, used from a
folder outside the repository, then uninstalled without leftovers.

The environment sees the project's installed stack (torch, BasicSR, MMagic) through a path entry, so only the wheel is
installed, without dependency resolution. (``venv --system-site-packages`` would not do: a venv made from inside a
venv sees the base interpreter's site-packages, not the project's.)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from deploy_helpers import pruned_checkpoint, write_frames

from ssl_plugin.tools import clips as clips_tool

REPO = Path(__file__).resolve().parents[2]
SOURCES = ('ssl_plugin', 'options', 'setup.py', 'setup.cfg', 'pyproject.toml', 'README.md', 'MANIFEST.in')
SCRIPTS = ('ssl-plugin-train', 'ssl-plugin-test', 'ssl-plugin-export', 'ssl-plugin-upscale', 'ssl-plugin-demo',
           'ssl-plugin-options', 'ssl-plugin-clips', 'ssl-plugin-make-dataset')
STACK_PTH = '_project_stack.pth'

pytestmark = pytest.mark.skipif(sys.prefix == sys.base_prefix, reason='needs the project virtual environment')


def run(cmd, cwd, env=None, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout


def build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a clean copy of the sources (the build leaves build/ and egg-info next to what it builds)."""
    src = tmp / 'src'
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copy2(path, src / name)
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q',
         '-w', tmp / 'dist', '.'], cwd=src)
    wheels = list((tmp / 'dist').glob('ssl_plugin-*.whl'))
    assert len(wheels) == 1
    return wheels[0]


def site_files(site: Path) -> list[str]:
    return sorted(p.name for p in site.iterdir() if p.name != STACK_PTH and p.name != '__pycache__')


def test_wheel_installs_works_from_any_folder_and_uninstalls_cleanly(tmp_path):
    wheel = build_wheel(tmp_path)
    venv = tmp_path / 'venv'
    run([sys.executable, '-m', 'venv', '--without-pip', venv], cwd=tmp_path)
    py = venv / 'bin' / 'python'
    site = Path(subprocess.check_output([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                        text=True).strip())
    before = site_files(site)
    (site / STACK_PTH).write_text(sysconfig.get_paths()['purelib'] + '\n')
    pip = [sys.executable, '-m', 'pip', '--python', py]
    run([*pip, 'install', '--no-deps', '--no-index', '--ignore-installed', '-q', wheel], cwd=tmp_path)

    work = tmp_path / 'elsewhere'
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'SSL_PLUGIN_DISABLE')}
    env.update(OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore',
               SSL_PLUGIN_CLIPS=str(clips_tool.fetch_clips(names=['bikes', 'carphone'])['bikes'].parent))
    # The import hook ships in the wheel: BasicSR finds the plugin's parts without `import ssl_plugin`.
    out = run([py, '-c', 'import sys, _ssl_plugin_autoload as a; print(a.__file__); import basicsr; '
                         'from basicsr.utils.registry import MODEL_REGISTRY as R; '
                         'print("registered" if "SSLVideoRecurrentModel" in R else "missing"); '
                         'import ssl_plugin; print(ssl_plugin.__file__)'], cwd=work, env=env)
    hook, registered, package = out.split()[-3:]
    assert registered == 'registered'
    assert Path(hook).is_relative_to(site) and Path(package).is_relative_to(site)

    # Shipped option files, by name, from any folder; a console script runs a tool with one of them.
    listed = run([venv / 'bin' / 'ssl-plugin-options', 'list'], cwd=work, env=env)
    assert 'ssl_basicvsr_demo.yml' in listed and 'mmagic/ssl_basicvsr_reds4.py' in listed
    assert str(site / 'ssl_plugin' / 'options' / 'mmagic_configs' / 'ssl_basicvsr_demo.py') in listed
    pruned_checkpoint(work / 'demo_net.pth', feat=16, blocks=2)  # the demo option file's network
    write_frames(work / 'lq', 2)
    out = run([venv / 'bin' / 'ssl-plugin-upscale', '--opt', 'ssl_basicvsr_demo.yml', '--ckpt', 'demo_net.pth',
               '--input', 'lq', '--output', 'sr', '--quiet'], cwd=work, env=env)
    assert 'upscaled 2 frames' in out and len(list((work / 'sr').glob('*.png'))) == 2

    # The demo's first step: the dataset from the bundled clips and its option files, from the shipped one.
    out = run([py, '-m', 'ssl_plugin.demo', '--work-dir', 'demo', '--prepare-only'], cwd=work, env=env)
    assert (work / 'demo' / 'data' / 'demo_x4' / 'meta_info_train.txt').is_file()
    assert (work / 'demo' / 'ssl_basicvsr_demo.yml').is_file()
    assert str(site / 'ssl_plugin' / 'train.py') in out

    run([*pip, 'uninstall', '-y', '-q', 'ssl_plugin'], cwd=tmp_path)
    assert site_files(site) == before
    assert [s for s in SCRIPTS if (venv / 'bin' / s).exists()] == []
    proc = subprocess.run([py, '-c', 'import ssl_plugin'], cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and 'No module named' in proc.stderr
