"""``SSLBasicVSR``: mmagic's BasicVSR editor plus the two SSL loss terms, so mmengine sums and logs them.

The model only translates: during the sparsity stage it adds ``loss_sir`` (L_SIR of the engine's regularizer on the
generator's scaling factors), during finetuning ``loss_tf`` (Temporal Finetuning against the frozen unpruned teacher).
Algorithm 1 itself (choosing S, the α schedule, pruning, checkpoint state) is driven by ``SSLPruningHook`` through the
engine's ``SSLController``, which the hook attaches to ``model.ssl_controller``; the controller computes both terms
(:meth:`~ssl_plugin.core.algorithm.SSLController.clip_losses`) and builds the TF teacher with this model's builder.
"""
from __future__ import annotations

import copy
import inspect

from mmagic.models.editors.basicvsr import BasicVSR
from mmagic.registry import MODELS

from ..core import describe
from ..core.algorithm import SSLConfig, SSLController
from ..core.options import unknown_key_message
from ..core.scaling import GAMMA_IN, GAMMA_OUT, GAMMA_SKIP

#: Parameter-name fragments mmagic's ``fix_iter`` freezes (BasicVSR's SPyNet, IconVSR's EDVR).
FLOW_MODULES = ('spynet', 'edvr')
HOOK_HINT = "add dict(type='SSLPruningHook') to custom_hooks (with custom_imports of ssl_plugin.mmagic_plugin)"


def reject_unknown_arguments(cls, unknown: dict, where: str) -> None:
    """mmengine builds ``cls(**cfg)``; an unknown key would be a bare TypeError. Name the closest argument instead
    (``model.tf_los`` -> ``model.tf_loss``)."""
    if unknown:
        known = [p for p in inspect.signature(cls.__init__).parameters if p not in ('self', 'unknown')]
        raise TypeError(f'{cls.__name__}: ' + unknown_key_message(where, next(iter(unknown)), known))


def _without_pretrained(cfg: dict) -> dict:
    """A generator config that builds without loading weights (the teacher gets its weights from the controller)."""
    cfg = copy.deepcopy(dict(cfg))
    for key in list(cfg):
        if key.endswith('pretrained'):
            cfg[key] = None
    cfg.pop('init_cfg', None)
    return cfg


@MODELS.register_module()
class SSLBasicVSR(BasicVSR):
    """BasicVSR editor with SSL losses.

    Args:
        ssl (dict): SSL options, validated by the engine (``method``, ``pruning_ratio`` or ``target_mac_ratio`` /
            ``target_params_ratio`` with ``budget_size`` / ``budget_exclude``, ``scope``, ``max_layer_ratio``,
            ``align``, ``normalize``, ``skip``, ``reg=dict(delta, interval, ceiling, stabilize_iter)``).
        sir_loss (dict): config of the L_SIR term (``SIRLoss``).
        tf_loss (dict | None): config of the L_TF term (``TFLoss``); None finetunes with the pixel loss only
            (the ablation without Temporal Finetuning).
        Other arguments: as mmagic's ``BasicVSR``.
    """

    def __init__(self, generator, pixel_loss, ssl=None, sir_loss=dict(type='SIRLoss', loss_weight=1.0),
                 tf_loss=dict(type='TFLoss', loss_weight=1.0, distance='l1'), ensemble=None, train_cfg=None,
                 test_cfg=None, init_cfg=None, data_preprocessor=None, **unknown):
        reject_unknown_arguments(type(self), unknown, 'model')
        super().__init__(generator=generator, pixel_loss=pixel_loss, ensemble=ensemble, train_cfg=train_cfg,
                         test_cfg=test_cfg, init_cfg=init_cfg, data_preprocessor=data_preprocessor)
        self.ssl_cfg = SSLConfig.from_dict(ssl, where='model.ssl')
        describe(self.generator, aligned=self.ssl_cfg.aligned)  # an unsupported generator (or method) fails here
        if sir_loss is None:
            raise ValueError('model.sir_loss: the sparsity stage needs an SIRLoss config, got None')
        self.sir_loss = MODELS.build(copy.deepcopy(sir_loss))
        self.tf_loss = MODELS.build(copy.deepcopy(tf_loss)) if tf_loss is not None else None
        self._generator_cfg = _without_pretrained(generator)
        # A plain attribute (not a submodule): neither in the state dict, nor in the optimizer, nor in DDP.
        self.ssl_controller = None
        self._register_load_state_dict_pre_hook(self._check_checkpoint_structure)

    # -- controller ----------------------------------------------------------------------------------------------
    def attach(self, ctrl: SSLController) -> SSLController:
        """Make ``ctrl`` this model's controller, with mmagic's loss modules and a builder of fresh dense generators
        (the TF teacher's skeleton; weights come from the controller)."""
        ctrl.configure(sir_loss=self.sir_loss, tf_loss=self.tf_loss,
                       teacher_factory=lambda: MODELS.build(copy.deepcopy(self._generator_cfg)),
                       tf=self.tf_loss is not None)
        self.ssl_controller = ctrl
        return ctrl

    # -- losses ----------------------------------------------------------------------------------------------------
    def forward_train(self, inputs, data_samples=None, **kwargs):
        ctrl = self.ssl_controller
        if ctrl is None:
            raise RuntimeError(f'SSLBasicVSR trains only under SSLPruningHook, which drives the SSL stages: '
                               f'{HOOK_HINT}')
        self._freeze_flow_until_fix_iter()
        with ctrl.clip_losses(self.generator, inputs) as terms:
            losses = super().forward_train(inputs, data_samples, **kwargs)
        losses.update({f'loss_{name}': term for name, term in terms.items()})
        return losses

    def _freeze_flow_until_fix_iter(self) -> None:
        """mmagic freezes SPyNet / EDVR once (``is_weight_fixed``) while ``step_counter < fix_iter``; a generator
        rebuilt after a reload, a resume or the prune would escape that one-time freeze, so re-apply it each step."""
        if self.step_counter < self.fix_iter:
            for name, param in self.generator.named_parameters():
                if any(m in name for m in FLOW_MODULES):
                    param.requires_grad_(False)
            self.is_weight_fixed = True

    # -- loading ---------------------------------------------------------------------------------------------------
    def _check_checkpoint_structure(self, state_dict, prefix, *args):
        """A pruned (or γ-carrying) checkpoint loaded into a dense model would only warn about shape mismatches and
        leave random weights behind; fail with the reason instead."""
        own = set(self.state_dict().keys())
        marks = ('.in_idx', '.out_idx', f'.{GAMMA_OUT}', f'.{GAMMA_IN}', f'.{GAMMA_SKIP}')
        foreign = [k for k in state_dict if k.startswith(prefix) and k.endswith(marks) and k[len(prefix):] not in own]
        if foreign:
            raise RuntimeError(f'this checkpoint holds an SSL {"pruned" if "_idx" in foreign[0] else "sparsity-stage"}'
                               f' generator (e.g. {foreign[0]!r}) but the model has the dense structure; '
                               f'SSLPruningHook rebuilds it from the checkpoint: {HOOK_HINT}')
