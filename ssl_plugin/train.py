"""Train with SSL through BasicSR's own pipeline: ``python ssl_plugin/train.py -opt options/ssl_basicvsr_reds.yml``.

BasicSR's flags work unchanged (``--auto_resume``, ``--launcher pytorch``, ``--force_yml``, ``--debug``); on a machine
without CUDA, ``torchrun --nproc_per_node N ssl_plugin/train.py -opt ... --launcher pytorch`` uses gloo.
``experiments/`` and ``tb_logger/`` are created in the current directory.
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
    run_pipeline('train', root_path)


if __name__ == '__main__':
    main()
