"""Register ssl_plugin's BasicSR parts whenever ``basicsr`` is imported, so BasicSR's own entry points
(``basicsr/train.py``, ``basicsr/test.py``, ``python -m basicsr.train``) find ``SSLVideoRecurrentModel``, ``SIRLoss``,
``TFLoss`` and ``BasicVSRUni`` with no code change.

How: a meta-path finder wraps the loader of the top-level ``basicsr`` package. Before BasicSR's ``__init__`` runs it
imports ``ssl_plugin`` (which applies ``ssl_plugin.compat``: without the torchvision shim ``import basicsr`` fails on
current torchvision); right after, it imports the plugin's registering modules. ``import ssl_plugin`` installs the
finder in the current process; ``python -m ssl_plugin.basicsr_plugin install`` (run by ``make setup``) writes
a one-line ``ssl_plugin_basicsr.pth`` into site-packages that installs it at interpreter start-up, cheaply: this
file only needs the standard library until ``basicsr`` is actually imported.

Set the environment variable ``SSL_PLUGIN_DISABLE=1`` to turn the automatic registration off (BasicSR then behaves as
if the plugin were not installed; explicit ``import ssl_plugin.basicsr_plugin`` still registers).

This file must stay importable on its own (the ``.pth`` loads it by path): standard library only, no relative imports.
"""
import argparse
import importlib
import importlib.abc
import importlib.util
import os
import sys
import sysconfig

HOST = 'basicsr'
DISABLE_ENV = 'SSL_PLUGIN_DISABLE'
PTH_NAME = 'ssl_plugin_basicsr.pth'
PLUGIN = 'ssl_plugin'
REGISTERING_MODULE = 'ssl_plugin.basicsr_plugin'
_MARK = '_ssl_plugin_basicsr_hook'


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def _host_state() -> str:
    """'absent', 'loading' (its ``__init__`` is running) or 'loaded'."""
    module = sys.modules.get(HOST)
    if module is None:
        return 'absent'
    spec = getattr(module, '__spec__', None)
    return 'loading' if getattr(spec, '_initializing', False) else 'loaded'


def register() -> None:
    """Import the modules whose decorators register the plugin in BasicSR's registries (idempotent)."""
    importlib.import_module(REGISTERING_MODULE).register()


class _RegisteringLoader(importlib.abc.Loader):
    """Wraps BasicSR's loader: compat shims before its code runs, the plugin's registrations right after."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_code, get_source, is_package, get_resource_reader, ...
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        plugin_found = not disabled() and importlib.util.find_spec(PLUGIN) is not None
        if plugin_found:
            importlib.import_module(PLUGIN)  # applies ssl_plugin.compat
        self._loader.exec_module(module)
        if plugin_found:
            try:
                register()
            except Exception as e:
                raise ImportError(f'ssl_plugin could not register its BasicSR parts ({type(e).__name__}: {e}); set '
                                  f'{DISABLE_ENV}=1 to import basicsr without it') from e


class BasicsrHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands BasicSR's own spec back with the loader wrapped."""

    def __init__(self):
        setattr(self, _MARK, True)
        self._busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != HOST or self._busy or disabled():
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(HOST)
        finally:
            self._busy = False
        if spec is None or spec.loader is None or isinstance(spec.loader, _RegisteringLoader):
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


def hook_installed() -> bool:
    return any(getattr(f, _MARK, False) for f in sys.meta_path)


def install_hook() -> None:
    """Make this process register the plugin when BasicSR is imported (at once if it already is)."""
    if disabled():
        return
    state = _host_state()
    if state == 'loaded':
        register()
    elif state == 'absent' and not hook_installed():
        sys.meta_path.insert(0, BasicsrHook())
    # 'loading': BasicSR is being imported through the hook, which registers right after it.


# ---------------------------------------------------------------------------------------------------- .pth file
def pth_line(source: str | None = None) -> str:
    """The ``.pth`` line: loads this file by path (no ``ssl_plugin`` import at start-up) and installs the hook.

    ``source``: this file's path, fixed in the line (``install`` into an environment). None (the ``.pth`` inside the
    wheel): the line locates the installed ``ssl_plugin`` package at start-up without importing it."""
    off = (f"os.environ.get({DISABLE_ENV!r}, '').strip().lower() in ('1', 'true', 'yes', 'on') "
           "or '_ssl_plugin_autoload' in sys.modules")
    if source is not None:
        locate = f"_sslp_path = {os.path.abspath(source)!r}; "
    else:
        locate = (f"_sslp_pkg = None if ({off}) else importlib.util.find_spec({PLUGIN!r}); "
                  "_sslp_path = os.path.join(os.path.dirname(_sslp_pkg.origin), 'basicsr_plugin', 'autoload.py') "
                  "if _sslp_pkg is not None and _sslp_pkg.origin else ''; ")
    # site.py exec()s the line inside a function: plain statements only (a lambda would not see these names).
    return ("import os, sys, importlib.util; " + locate +
            f"_sslp_spec = None if ({off} or not os.path.isfile(_sslp_path)) else "
            "importlib.util.spec_from_file_location('_ssl_plugin_autoload', _sslp_path); "
            "_sslp_mod = _sslp_spec and importlib.util.module_from_spec(_sslp_spec); "
            "_sslp_spec and sys.modules.__setitem__('_ssl_plugin_autoload', _sslp_mod); "
            "_sslp_spec and _sslp_spec.loader.exec_module(_sslp_mod); "
            "_sslp_spec and _sslp_mod.install_hook()\n")


def site_dir() -> str:
    return sysconfig.get_paths()['purelib']


def install(site: str | None = None) -> str:
    """Write the ``.pth`` into ``site`` (default: this interpreter's site-packages), atomically; returns its path."""
    site = site or site_dir()
    os.makedirs(site, exist_ok=True)
    path = os.path.join(site, PTH_NAME)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(pth_line(__file__))
    os.replace(tmp, path)
    return path


def uninstall(site: str | None = None) -> str | None:
    path = os.path.join(site or site_dir(), PTH_NAME)
    if os.path.exists(path):
        os.remove(path)
        return path
    return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m ssl_plugin.basicsr_plugin',
                                     description='Install / remove the hook that registers ssl_plugin in BasicSR.')
    parser.add_argument('action', choices=['install', 'uninstall', 'status'])
    parser.add_argument('--site', default=None, help=f'site-packages folder (default: {site_dir()})')
    args = parser.parse_args(argv)
    if args.action == 'install':
        print(f'installed {install(args.site)} (set {DISABLE_ENV}=1 to turn it off)')
    elif args.action == 'uninstall':
        removed = uninstall(args.site)
        print(f'removed {removed}' if removed else 'nothing to remove')
    else:
        path = os.path.join(args.site or site_dir(), PTH_NAME)
        print(f'{path}: {"present" if os.path.exists(path) else "absent"}; disabled by {DISABLE_ENV}: {disabled()}')


if __name__ == '__main__':
    main()
