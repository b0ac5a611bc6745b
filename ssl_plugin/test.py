"""Evaluate through BasicSR's own pipeline: ``python ssl_plugin/test.py -opt options/test_ssl_basicvsr_reds4.yml``.

With ``model_type: SSLVideoRecurrentModel`` a pruned ``net_g_*.pth`` is rebuilt from the pruning spec it carries.
``results/`` is created in the current directory.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repository's ssl_plugin importable
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # ssl_plugin/ itself must not shadow top-level modules
    if _root not in sys.path:
        sys.path.insert(0, _root)

import ssl_plugin  # noqa: E402,F401  (compat shims before basicsr)
from ssl_plugin.basicsr_plugin.launch import run_pipeline  # noqa: E402


def main(root_path=None):
    run_pipeline('test', root_path)


if __name__ == '__main__':
    main()
