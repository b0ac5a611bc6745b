"""Build hooks only (metadata and dependencies are in setup.cfg): a wheel carries

* the shipped option files: the repository's ``options/`` is copied into the package as ``ssl_plugin/options/``
  (MMagic configs in ``ssl_plugin/options/mmagic_configs/``; ``ssl_plugin.resources`` finds either layout);
* the BasicSR import hook as ``ssl_plugin_basicsr.pth`` at the top of site-packages, listed in the wheel's RECORD, so
  ``pip uninstall ssl_plugin`` removes it. Its line locates the installed package at start-up (no absolute path).

An editable install gets neither (it reads ``options/`` from the checkout; ``make setup`` writes the ``.pth`` with
``python -m ssl_plugin.basicsr_plugin install``).
"""
import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _autoload():
    """ssl_plugin/basicsr_plugin/autoload.py loaded by path (standard library only): the .pth line comes from it."""
    spec = importlib.util.spec_from_file_location('_ssl_plugin_autoload_build',
                                                  ROOT / 'ssl_plugin' / 'basicsr_plugin' / 'autoload.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        self._copy_options(Path(self.build_lib))
        autoload = _autoload()
        pth = Path(self.build_lib) / autoload.PTH_NAME
        pth.write_text(autoload.pth_line())

    @staticmethod
    def _copy_options(build_lib: Path):
        src = ROOT / 'options'
        dest = build_lib / 'ssl_plugin' / 'options'
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for f in sorted(src.glob('*.yml')):
            shutil.copy2(f, dest / f.name)
        mm = dest / 'mmagic_configs'
        mm.mkdir()
        for f in sorted((src / 'mmagic').glob('*.py')):
            shutil.copy2(f, mm / f.name)


setup(cmdclass={'build_py': BuildPyWithData})
