"""Run-time compatibility shims between the pinned host stack and current torch / torchvision.

``import ssl_plugin`` calls :func:`apply`. Every shim checks first whether it is needed, does nothing otherwise,
and is idempotent, so importing the plugin twice (or from a subprocess) is harmless. None of them edits a host file.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

__all__ = ["MissingCompiledOpsError", "apply", "applied"]

#: Names of the shims that :func:`apply` installed in this process (for diagnostics and tests).
applied: set[str] = set()


# ----------------------------------------------------------------------------------------------------------------------
# 1. torchvision.transforms.functional_tensor (BasicSR 1.4.2)
# ----------------------------------------------------------------------------------------------------------------------

_FUNCTIONAL_TENSOR = "torchvision.transforms.functional_tensor"


def shim_functional_tensor() -> bool:
    """Provide ``torchvision.transforms.functional_tensor`` for BasicSR 1.4.2 on torchvision >= 0.17.

    Why: ``basicsr/data/degradations.py`` does ``from torchvision.transforms.functional_tensor import
    rgb_to_grayscale`` and ``basicsr/__init__.py`` imports it, so every ``import basicsr...`` fails once torchvision
    removed that module (0.17). The fix upstream (BasicSR commit 8d56e3a) was never released to PyPI.
    Drop when: BasicSR > 1.4.2 is on PyPI and pinned, or torchvision < 0.17 is pinned.
    Returns True when the stand-in module was installed by this call.
    """
    if _FUNCTIONAL_TENSOR in sys.modules or importlib.util.find_spec("torchvision") is None:
        return False
    if importlib.util.find_spec(_FUNCTIONAL_TENSOR) is not None:  # older torchvision still ships it
        return False
    from torchvision.transforms import functional

    module = types.ModuleType(_FUNCTIONAL_TENSOR, "Stand-in for the module removed in torchvision 0.17.")
    module.__spec__ = importlib.machinery.ModuleSpec(_FUNCTIONAL_TENSOR, None)  # keeps find_spec() working
    module.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[_FUNCTIONAL_TENSOR] = module
    applied.add("functional_tensor")
    return True


# ----------------------------------------------------------------------------------------------------------------------
# 2. mmcv.ops stand-in (mmcv-lite / mmcv without compiled ops, MMagic 1.2.0)
# ----------------------------------------------------------------------------------------------------------------------

_DCN_MODELS = "TDAN"
_GAN_MODELS = "StyleGAN1/2/3 and MSPIE-StyleGAN2"

#: Every name MMagic 1.2.0 imports from ``mmcv.ops`` at module level, by submodule ('' = ``mmcv.ops`` itself),
#: with the model family that needs it. CamelCase names are classes (MMagic subclasses them), the rest functions.
_MMCV_OPS_NAMES: dict[str, dict[str, str]] = {
    "": {
        # tdan_net.py (BasicVSR++, EDVR and IconVSR get the real ops of _MMCV_OPS_PROVIDED below)
        "DeformConv2d": _DCN_MODELS,
        "DeformConv2dPack": _DCN_MODELS,
        "deform_conv2d": _DCN_MODELS,
        # stylegan2/3, mspie, stylegan2/ada (guarded by try/except there, which would otherwise leave None behind)
        "bias_act": _GAN_MODELS,
        "conv2d_gradfix": _GAN_MODELS,
        "filtered_lrelu": _GAN_MODELS,
        "filter2d": _GAN_MODELS,
        "upsample2d": _GAN_MODELS,
        "conv2d": _GAN_MODELS,
        "conv_transpose2d": _GAN_MODELS,
        "upfirdn2d": _GAN_MODELS,
        "FusedBiasLeakyReLU": _GAN_MODELS,
        "fused_bias_leakyrelu": _GAN_MODELS,
    },
    # stylegan1_modules.py, stylegan2_modules.py import these submodules directly
    "fused_bias_leakyrelu": {"FusedBiasLeakyReLU": _GAN_MODELS, "fused_bias_leakyrelu": _GAN_MODELS},
    "upfirdn2d": {"upfirdn2d": _GAN_MODELS},
}


#: Names the stand-in implements (``ssl_plugin.ops``, on torchvision's deform_conv2d), by submodule as above:
#: basicvsr_plusplus_net.py and edvr_net.py (IconVSR reuses EDVR's PCD alignment) import the first and the last.
_MMCV_OPS_PROVIDED: dict[str, tuple[str, ...]] = {
    "": ("ModulatedDeformConv2d", "ModulatedDeformConv2dPack", "modulated_deform_conv2d"),
    "modulated_deform_conv": ("ModulatedDeformConv2d", "ModulatedDeformConv2dPack", "modulated_deform_conv2d"),
}


class MissingCompiledOpsError(RuntimeError):
    """A model needs an mmcv compiled op, but the installed mmcv has none (``mmcv._ext`` is missing)."""


def _missing_ops_message(name: str, family: str) -> str:
    return (
        f"mmcv.ops.{name} is unavailable: {family} need mmcv built with compiled ops "
        "(mmcv._ext is missing; install full mmcv 2.1.0) — BasicVSR, BasicVSR++, EDVR and IconVSR work without "
        "them (ssl_plugin provides modulated deformable convolution on torchvision)"
    )


def _missing_class(name: str, family: str) -> type:
    """A subclassable placeholder whose construction raises (MMagic subclasses e.g. ModulatedDeformConv2d)."""
    import torch.nn as nn

    message = _missing_ops_message(name, family)

    def __init__(self, *args, **kwargs):
        raise MissingCompiledOpsError(message)

    return type(name, (nn.Module,), {"__init__": __init__, "__doc__": message, "__module__": "mmcv.ops"})


class _MissingFunction:
    """A placeholder for an mmcv op function: calling it, or reading an attribute of it, fails with the reason."""

    def __init__(self, name: str, family: str):
        self.__name__ = self.__qualname__ = name
        self.__doc__ = self._message = _missing_ops_message(name, family)

    def __call__(self, *args, **kwargs):
        raise MissingCompiledOpsError(self._message)

    def __getattr__(self, attr: str):
        # AttributeError (not the op error) so hasattr()/copy/introspection keep working.
        if attr.startswith("__") or attr == "_message":
            raise AttributeError(attr)
        raise AttributeError(f"{attr!r}: {self._message}")

    def __repr__(self) -> str:
        return f"<missing mmcv.ops.{self.__name__}>"


def _mmcv_has_compiled_ops() -> bool | None:
    """None when mmcv is not installed, else whether its ``_ext`` extension exists (found without importing mmcv)."""
    spec = importlib.util.find_spec("mmcv")
    if spec is None or spec.submodule_search_locations is None:
        return None
    return importlib.machinery.PathFinder.find_spec("_ext", list(spec.submodule_search_locations)) is not None


def shim_mmcv_ops() -> bool:
    """Install an ``mmcv.ops`` stand-in when mmcv has no compiled ops (mmcv-lite).

    Why: ``mmagic/models/editors/__init__.py`` eagerly imports BasicVSR++, EDVR, TDAN and the StyleGANs, which import
    ``mmcv.ops`` at module level; on mmcv-lite that raises ``No module named 'mmcv._ext'``, so ``import mmagic.models``
    fails, and with it every ``mmagic.registry.MODELS.build`` (MODELS lazily imports ``mmagic.models``), even of a
    model that needs no op. The stand-in provides modulated deformable convolution (``ModulatedDeformConv2d``,
    ``ModulatedDeformConv2dPack``, ``modulated_deform_conv2d`` from :mod:`ssl_plugin.ops`, on torchvision), so
    BasicVSR++, EDVR and IconVSR build and train, and gives every other such name a placeholder that raises
    :class:`MissingCompiledOpsError` when used.
    Drop when: a full mmcv (with ``mmcv._ext``) for the pinned torch is installable, then this shim is skipped anyway.
    Returns True when the stand-in was installed by this call.
    """
    if "mmcv.ops" in sys.modules or _mmcv_has_compiled_ops() is not False:
        return False
    import mmcv

    package = types.ModuleType("mmcv.ops", "Stand-in for mmcv.ops: this mmcv has no compiled ops (mmcv._ext).")
    package.__spec__ = importlib.machinery.ModuleSpec("mmcv.ops", None, is_package=True)
    package.__path__ = []  # a package, so `mmcv.ops.<sub>` resolves to the stand-in submodules below only
    package.__ssl_plugin_standin__ = True
    modules = {"": package}
    for sub in dict.fromkeys([*_MMCV_OPS_NAMES, *_MMCV_OPS_PROVIDED]):
        if sub:
            full = f"mmcv.ops.{sub}"
            module = types.ModuleType(full, f"Stand-in for {full}: mmcv._ext is missing.")
            module.__spec__ = importlib.machinery.ModuleSpec(full, None)
            module.__ssl_plugin_standin__ = True
            modules[sub] = module
    placeholders: dict[str, object] = {}
    for sub, names in _MMCV_OPS_NAMES.items():
        for name, family in names.items():
            if name not in placeholders:  # one object per name, shared by mmcv.ops and its submodule
                make = _missing_class if name[0].isupper() else _MissingFunction
                placeholders[name] = make(name, family)
            setattr(modules[sub], name, placeholders[name])
    from . import ops

    for sub, names in _MMCV_OPS_PROVIDED.items():
        for name in names:
            setattr(modules[sub], name, getattr(ops, name))
    for sub, module in modules.items():
        sys.modules[module.__name__] = module
        if sub and not hasattr(package, sub):  # like mmcv: `mmcv.ops.upfirdn2d` is the function, not the submodule
            setattr(package, sub, module)
    mmcv.ops = package
    applied.add("mmcv_ops")
    return True


# ----------------------------------------------------------------------------------------------------------------------
# 3. mmengine checkpoints under torch.load(weights_only=True)
# ----------------------------------------------------------------------------------------------------------------------


def _history_buffer_getattr(obj, name: str):
    """The only ``getattr`` an mmengine checkpoint needs: ``HistoryBuffer`` pickles its registered statistics
    methods (min/max/current/mean) as ``getattr(HistoryBuffer, 'min')``. Anything else is refused."""
    import pickle

    from mmengine.logging.history_buffer import HistoryBuffer

    # The class-level registry fills on the first HistoryBuffer(), so the four defaults are named explicitly.
    allowed = {"min", "max", "current", "mean", *HistoryBuffer._statistics_methods}
    if isinstance(obj, type) and issubclass(obj, HistoryBuffer) and isinstance(name, str) and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f"weights_only load refused getattr({obj!r}, {name!r}): only HistoryBuffer statistics methods are allow-listed"
    )


def _numpy_safe_globals() -> list:
    """numpy globals in an mmengine checkpoint: HistoryBuffer's arrays and numpy scalars (from logged values)."""
    import numpy as np

    try:  # numpy >= 2 (numpy 1.26 also has numpy._core, as a pickle-compat alias)
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray
    dtype_classes = {
        type(np.dtype(t))
        for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                  np.float16, np.float32, np.float64)
    }
    safe: list = [np.ndarray, np.dtype, *sorted(dtype_classes, key=lambda c: c.__name__)]
    # A checkpoint names these by the numpy that wrote it: numpy.core.* (numpy 1) or numpy._core.* (numpy 2).
    for fn in (multiarray._reconstruct, multiarray.scalar):
        for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
            safe.append((fn, f"{prefix}.{fn.__name__}"))
    return safe


def shim_mmengine_weights_only() -> bool:
    """Allow-list what mmengine checkpoints contain, so ``Runner.resume`` / ``load_checkpoint`` work on torch >= 2.6.

    Why: torch 2.6 made ``torch.load(weights_only=True)`` the default, and mmengine 0.10.7 calls ``torch.load``
    without ``weights_only``; its checkpoints hold ``message_hub`` state with ``HistoryBuffer`` objects (numpy arrays,
    numpy scalars, ``getattr(HistoryBuffer, <stat>)``), so resuming raises ``UnpicklingError``. This registers exactly
    those globals with ``torch.serialization.add_safe_globals``; ``getattr`` only through
    :func:`_history_buffer_getattr`. Safety stays on: anything else in a checkpoint is still refused.
    Drop when: mmengine passes ``weights_only`` itself or registers its own safe globals (upstream PR #1650).
    Returns True when globals were registered by this call.
    """
    if "mmengine_weights_only" in applied or importlib.util.find_spec("mmengine") is None:
        return False
    import torch

    if not hasattr(torch.serialization, "add_safe_globals"):  # torch < 2.4: weights_only is not the default anyway
        return False
    from mmengine.logging.history_buffer import HistoryBuffer

    torch.serialization.add_safe_globals(
        [HistoryBuffer, (_history_buffer_getattr, "builtins.getattr"), *_numpy_safe_globals()]
    )
    applied.add("mmengine_weights_only")
    return True


def apply() -> set[str]:
    """Install every shim that this environment needs; returns the names of all shims active in this process."""
    shim_functional_tensor()
    shim_mmcv_ops()
    shim_mmengine_weights_only()
    return set(applied)
