"""BasicVSR++ in both hosts (BasicSR ``BasicVSRPlusPlus``, MMagic ``BasicVSRPlusPlusNet``), deformable alignment on:
the topology, exact pruning (γ of S = 0 gives the pruned network's output), and the four branches' hidden states for
Temporal Finetuning."""
from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
from engine_helpers import DTYPE, EXACT, _run_in_float32, max_diff, randomize, run, set_gammas

from ssl_plugin.core import (
    HiddenStateRecorder,
    PixelShuffleUnit,
    PlainUnit,
    ResidualUnit,
    RSCBlock,
    apply_spec,
    describe,
    insert_scaling_factors,
    l1_scores,
    prune,
    select_unimportant,
    teacher_hidden_states,
    temporal_finetuning_loss,
)
from ssl_plugin.ops import ModulatedDeformConv2d

LR = 64  # both hosts' BasicVSR++ assert LR frames of at least 64 px
BRANCHES = ['backward_1', 'forward_1', 'backward_2', 'forward_2']
CHAIN = {
    'BasicVSRPlusPlus': ['upconv1', 'upconv2', 'conv_hr'],
    'BasicVSRPlusPlusNet': ['upsample1.upsample_conv', 'upsample2.upsample_conv', 'conv_hr'],
}


def build_pp(arch: str, feat: int, blocks: int, seed: int = 0, aligned: bool = True, dtype=DTYPE, **kwargs):
    """A BasicVSR++ of either host (SPyNet in float32, see engine_helpers). BasicSR adds the deformable alignment
    only when CUDA is available at construction; ``aligned`` makes it believe so (the alignment then runs on
    torchvision's CPU kernel)."""
    torch.manual_seed(seed)
    if arch == 'BasicVSRPlusPlus':
        from basicsr.archs.basicvsrpp_arch import BasicVSRPlusPlus
        with mock.patch('torch.cuda.is_available', return_value=aligned):
            net = BasicVSRPlusPlus(mid_channels=feat, num_blocks=blocks, **kwargs)
        assert net.is_with_alignment == aligned
    else:
        from mmagic.models.editors import BasicVSRPlusPlusNet
        net = BasicVSRPlusPlusNet(mid_channels=feat, num_blocks=blocks, **kwargs)
    net = net.to(dtype)
    _run_in_float32(net.spynet)
    return net


def lq(frames: int, seed: int = 1, size: int = LR, dtype=DTYPE):
    return torch.rand(1, frames, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize('arch', list(CHAIN))
def test_topology(arch):
    net = build_pp(arch, 8, 2, dtype=torch.float32)
    topo = describe(net)
    assert topo.arch == arch
    res = [u.path for u in topo.units if isinstance(u, ResidualUnit)]
    trunks = ['feat_extract'] + [f'backbone.{b}' for b in BRANCHES] + ['reconstruction']
    depth = {'feat_extract': 5, 'reconstruction': 5}  # fixed in both hosts; the backbones have num_blocks
    assert res == [f'{t}.main.2.{i}' for t in trunks for i in range(depth.get(t, 2))]
    chain = [u for u in topo.units if not isinstance(u, ResidualUnit)]
    assert [u.path for u in chain] == CHAIN[arch]
    assert [type(u) for u in chain] == [PixelShuffleUnit, PixelShuffleUnit, PlainUnit]
    assert [u.consumers[0].path for u in chain] == CHAIN[arch][1:] + ['conv_last']
    assert topo.hidden == {b: f'backbone.{b}' for b in BRANCHES} and set(topo.hidden_residual) == set(BRANCHES)
    # Never pruned: SPyNet, the deformable alignment, every input conv, conv_last.
    assert not any(k.startswith(('spynet', 'deform_align', 'conv_last')) or '.main.0' in k for k in topo.keys())
    assert {'spynet', 'deform_align', 'conv_last', 'feat_extract.main.0', 'backbone.forward_2.main.0'} <= \
        set(topo.frozen)
    assert any(isinstance(m, ModulatedDeformConv2d) for m in net.modules()) == (arch == 'BasicVSRPlusPlusNet')


def test_full_resolution_input_and_unaligned_basicsr_forms():
    net = build_pp('BasicVSRPlusPlusNet', 8, 1, is_low_res_input=False)
    assert describe(net).units[0].path == 'feat_extract.4.main.2.0'  # blocks after the two strided convs
    unaligned, aligned = build_pp('BasicVSRPlusPlus', 8, 1, aligned=False), build_pp('BasicVSRPlusPlus', 8, 1)
    assert len(unaligned.deform_align) == 0
    assert describe(unaligned).keys() == describe(aligned).keys()


# (arch, width, backbone depth, ratio, scope, align, frames, aligned, dtype). Both hosts fix deform_groups at 16, so
# widths are multiples of 8. 3 frames reach the second-order terms (feat_n2, flow_n2). The upsampling tail works at 64
# channels at the HR size whatever the width (4.4x slower in float64, whose CPU convs are not oneDNN's): float64
# (exact to 1e-10) for one case, float32 (to F32_TOL; outputs are of order 1) for the other sizes and ratios.
F32_TOL = 2e-5
CASES = [
    ('BasicVSRPlusPlus', 8, 1, 0.5, 'global', 1, 2, True, torch.float64),
    ('BasicVSRPlusPlus', 8, 1, 0.6, 'local', 1, 2, False, torch.float32),
    ('BasicVSRPlusPlusNet', 16, 2, 0.7, 'local', 8, 3, True, torch.float32),
    ('BasicVSRPlusPlusNet', 8, 1, 0.3, 'global', 4, 2, True, torch.float32),
]
IDS = [f'{a}-{f}x{b}-{r}-{s}-align{al}-t{t}' + ('' if on else '-unaligned') + f'-{str(dt)[6:]}'
       for a, f, b, r, s, al, t, on, dt in CASES]


@pytest.mark.parametrize('arch, feat, blocks, ratio, scope, align, frames, aligned, dtype', CASES, ids=IDS)
def test_pruned_output_equals_unpruned_with_gamma_of_s_zero(arch, feat, blocks, ratio, scope, align, frames,
                                                             aligned, dtype):
    tol = EXACT if dtype == torch.float64 else F32_TOL
    net = build_pp(arch, feat, blocks, aligned=aligned, dtype=dtype)
    randomize(net)  # also the offset convs (zero-initialised by the hosts): the DCNs really deform
    topo = describe(net)
    gammas = insert_scaling_factors(net, topo)
    pruned = select_unimportant(l1_scores(net, topo), ratio, scope, align)
    set_gammas(gammas, pruned)
    x = lq(frames, dtype=dtype)
    with torch.no_grad(), HiddenStateRecorder(net, detach=True) as rec:
        y_ref = net(x)
    teacher_states = rec.states
    dense_state = copy.deepcopy(net.state_dict())
    spec = prune(net, pruned, topo)
    with torch.no_grad(), HiddenStateRecorder(net, detach=True) as rec:
        y = net(x)
    assert max_diff(y, y_ref) <= tol
    # Not vacuous: S spans the backbones, the reconstruction and the upsampling chain; the blocks became RSC blocks.
    n_pruned = {k: v.numel() for k, v in pruned.items()}
    assert any(n for k, n in n_pruned.items() if k.startswith('backbone.'))
    assert any(n for k, n in n_pruned.items() if k.startswith('reconstruction.'))
    assert any(n_pruned.get(k) for k in CHAIN[arch])
    assert isinstance(net.get_submodule('backbone.backward_1.main.2.0'), RSCBlock)
    # TF: the pruned network's hidden states equal the unpruned ones here (RSC keeps width and order): L_TF = 0.
    assert float(temporal_finetuning_loss(rec.states, teacher_states)) <= tol
    if dtype == torch.float64:
        return
    # The spec rebuilds the pruned skeleton on a fresh dense network, which loads the pruned weights strictly.
    again = apply_spec(build_pp(arch, feat, blocks, seed=5, aligned=aligned, dtype=dtype), spec)
    again.load_state_dict(net.state_dict(), strict=True)
    assert max_diff(run(again, x), y) <= tol
    # ... and a γ left non-zero on S shows far above the tolerance: the check can fail.
    wrong = build_pp(arch, feat, blocks, aligned=aligned, dtype=dtype)
    wrong_gammas = insert_scaling_factors(wrong, describe(wrong))
    wrong.load_state_dict(dense_state, strict=True)
    with torch.no_grad():
        wrong_gammas['conv_hr'][pruned['conv_hr']] = 1.0
    assert max_diff(run(wrong, x), y) > 100 * tol


def test_hidden_states_are_each_branchs_feature_at_every_step(arch='BasicVSRPlusPlusNet'):
    """The recorder's state of branch b at step i is the b-th feature the network hands to reconstruction for that
    frame (backward branches are recorded from the last frame to the first), i.e. ``feat_prop`` after the update."""
    net = build_pp(arch, 8, 1, dtype=torch.float32)
    randomize(net)
    frames, feat = 3, 8
    inputs = []
    handle = net.reconstruction.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    x = lq(frames, dtype=torch.float32)
    with torch.no_grad(), HiddenStateRecorder(net, detach=True) as rec:
        net(x)
    handle.remove()
    assert set(rec.states) == set(BRANCHES)
    for j, branch in enumerate(BRANCHES, start=1):
        states = rec.states[branch]
        assert len(states) == frames
        if branch.startswith('backward'):
            states = states[::-1]
        for t in range(frames):
            torch.testing.assert_close(states[t], inputs[t][:, j * feat:(j + 1) * feat], rtol=0, atol=0)
    # The teacher path records the same states; a dict naming the module alone records only the update.
    teacher = teacher_hidden_states(net, x)
    torch.testing.assert_close(teacher['forward_2'][-1], rec.states['forward_2'][-1], rtol=0, atol=0)
    with torch.no_grad(), HiddenStateRecorder(net, hidden={'f': 'backbone.forward_2'}, detach=True) as plain:
        net(x)
    assert max_diff(plain.states['f'][-1], rec.states['forward_2'][-1]) > 1e-6
    with pytest.raises(ValueError, match='not among the directions'):
        HiddenStateRecorder(net, hidden={'f': 'backbone.forward_2'}, residual=['forward_2'])


def test_both_hosts_align_identically_with_the_same_weights():
    """BasicSR's alignment calls torchvision directly; MMagic's calls mmcv's op, here the stand-in. Same weights,
    same output: the stand-in keeps mmcv's argument order, offset layout and parameter names."""
    from basicsr.archs.basicvsrpp_arch import SecondOrderDeformableAlignment as BasicSRAlign
    from mmagic.models.editors.basicvsr_plusplus_net.basicvsr_plusplus_net import (
        SecondOrderDeformableAlignment as MMagicAlign,
    )

    torch.manual_seed(0)
    c, dg = 8, 4
    a = BasicSRAlign(2 * c, c, 3, padding=1, deformable_groups=dg, max_residue_magnitude=5).double()
    b = MMagicAlign(2 * c, c, 3, padding=1, deform_groups=dg, max_residue_magnitude=5).double()
    with torch.no_grad():
        for p in a.parameters():
            p.normal_(0, 0.1)
    b.load_state_dict(a.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(1, 2 * c, 9, 11, generator=g, dtype=DTYPE), torch.randn(1, 3 * c, 9, 11, generator=g,
                                                                                  dtype=DTYPE)
    f1, f2 = torch.randn(1, 2, 9, 11, generator=g, dtype=DTYPE) * 2, torch.randn(1, 2, 9, 11, generator=g, dtype=DTYPE)
    torch.testing.assert_close(b(x, cond, f1, f2), a(x, cond, f1, f2), rtol=1e-12, atol=1e-12)
