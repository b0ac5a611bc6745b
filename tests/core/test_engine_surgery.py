"""Surgery and RSC: with γ of S exactly 0, the pruned network computes what the unpruned one computes."""
from __future__ import annotations

import copy

import pytest
import torch
from engine_helpers import EXACT, ToyUniVSR, build, clip, max_diff, run, set_gammas
from torch import nn

from ssl_plugin.core import (
    PixelShuffleUnit,
    ResidualUnit,
    RSCBlock,
    SpecError,
    count_params,
    describe,
    insert_scaling_factors,
    kept_indices,
    prune,
    scaling_factors,
)
from ssl_plugin.core.surgery import key_size

# (arch, width, depth, ratio, scope, align): every supported arch, several sizes, global and local, aligned or not.
# IconVSR needs 5 frames and runs EDVR twice per clip (the slowest forward here): one case.
CASES = [
    ('BasicVSR', 8, 2, 0.5, 'global', 1),
    ('BasicVSR', 12, 1, 0.3, 'local', 4),
    ('BasicVSR', 16, 1, 0.7, 'global', 8),
    ('IconVSR', 8, 1, 0.5, 'global', 1),
    ('BasicVSRNet', 8, 2, 0.5, 'global', 1),
    ('BasicVSRNet', 12, 1, 0.6, 'local', 4),
    ('BasicVSRUni', 8, 2, 0.5, 'global', 1),
    ('BasicVSRUni', 12, 1, 0.3, 'local', 4),
    ('ToyUniVSR', 8, 2, 0.5, 'global', 1),
    ('ToyUniVSR', 12, 3, 0.7, 'local', 2),
]
IDS = [f'{a}-{f}x{b}-{r}-{s}-align{al}' for a, f, b, r, s, al in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def case(request, pruned_case):
    return pruned_case(*request.param)


def test_pruned_output_equals_unpruned(case):
    assert case.y_pruned.shape == case.y_ref.shape
    assert max_diff(case.y_pruned, case.y_ref) <= EXACT
    # Not vacuous: S holds units of residual and reconstruction keys alike.
    n_pruned = {k: v.numel() for k, v in case.pruned.items()}
    assert sum(n_pruned.values()) > 0
    assert any(n for k, n in n_pruned.items() if '.main.2.' in k)
    assert any(n for k, n in n_pruned.items() if '.main.2.' not in k)


def test_exactness_check_detects_a_wrong_cut(pruned_case):
    """The same cut is far from exact when the removed γ are not zero: the check above can fail."""
    case = pruned_case(*CASES[0])
    net = build(case.arch, case.feat, case.blocks)
    gammas = insert_scaling_factors(net, describe(net))
    net.load_state_dict(case.dense_state, strict=True)
    with torch.no_grad():
        for key, idx in case.pruned.items():
            gammas[key][idx] = 0.5
    assert max_diff(run(net, case.x), case.y_pruned) > 1e-4


def test_residual_blocks_become_rsc_blocks_with_index_buffers(case):
    state = case.net.state_dict()
    for unit in case.topology.units:
        if not isinstance(unit, ResidualUnit):
            continue
        block = case.net.get_submodule(unit.path)
        assert isinstance(block, RSCBlock) and block.width == case.feat
        k_in, k_mid, k_out = (kept_indices(case.feat, case.pruned[k]) for k in unit.keys)
        assert dict(block.named_buffers()).keys() == {'in_idx', 'out_idx'}
        assert torch.equal(state[f'{unit.path}.in_idx'], k_in) and state[f'{unit.path}.in_idx'].dtype == torch.int64
        assert torch.equal(state[f'{unit.path}.out_idx'], k_out)
        assert block.conv1.weight.shape[:2] == (len(k_mid), len(k_in))
        assert block.conv2.weight.shape[:2] == (len(k_out), len(k_mid))
        assert block.reads_all == (len(k_in) == case.feat) and block.writes_all == (len(k_out) == case.feat)


def test_reconstruction_convs_are_sliced_by_whole_groups(case):
    """Each chain conv keeps exactly its kept filters (whole r*r groups for a shuffle conv) of the γ-merged dense
    weights, restricted to the input channels its producer kept."""
    dense = case.dense_state
    chain = [u for u in case.topology.units if not isinstance(u, ResidualUnit)]
    producer_rows = {}
    for unit in chain:
        w = dense[f'{unit.path}.weight']
        gamma = dense[f'{unit.path}.ssl_gamma']
        r2 = unit.scale ** 2 if isinstance(unit, PixelShuffleUnit) else 1
        kept = kept_indices(gamma.numel(), case.pruned[unit.path])
        rows = (kept.view(-1, 1) * r2 + torch.arange(r2)).flatten()
        cols = producer_rows.get(unit.path, torch.arange(w.shape[1]))
        merged = w * gamma.repeat_interleave(r2).view(-1, 1, 1, 1)
        conv = case.net.get_submodule(unit.path)
        assert type(conv) is nn.Conv2d and conv.out_channels == len(kept) * r2
        assert torch.equal(conv.weight, merged[rows][:, cols])
        bias = dense[f'{unit.path}.bias'] * gamma.repeat_interleave(r2)
        assert torch.equal(conv.bias, bias[rows])
        for consumer in unit.consumers:
            producer_rows[consumer.path] = kept + consumer.offset
    last = case.net.get_submodule(chain[-1].consumers[0].path)
    assert last.in_channels == len(producer_rows[chain[-1].consumers[0].path])


def test_no_gamma_or_hook_survives_and_params_shrink(case):
    assert not scaling_factors(case.net, case.topology)
    assert not any(k.endswith(('ssl_gamma', 'ssl_gamma_in')) for k in case.net.state_dict())
    for m in case.net.modules():
        if isinstance(m, nn.Conv2d):
            assert not m._forward_hooks and not m._forward_pre_hooks
    dense = build(case.arch, case.feat, case.blocks)
    assert count_params(case.net) < count_params(dense)
    removed = sum(v.numel() for v in case.pruned.values())
    assert removed > 0


def test_pruned_net_trains(pruned_case):
    for args in (('BasicVSRUni', 8, 2, 0.5, 'global', 1), CASES[-1]):
        case = pruned_case(*args)
        net = copy.deepcopy(case.net).train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        loss = (net(case.x) - case.y_ref).abs().mean()
        loss.backward()
        for name, p in net.named_parameters():
            if '.main.2.' in name:
                assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        opt.step()
        assert any(not torch.equal(p, before[n]) for n, p in net.named_parameters() if '.main.2.' in n)


def test_fast_paths_and_partial_cuts_are_exact():
    """Blocks with nothing removed on one side skip the gather / scatter; keys absent from S are kept whole."""
    net = ToyUniVSR(num_feat=6, num_block=2).double()
    topo = describe(net)
    gammas = insert_scaling_factors(net, topo)
    pruned = {'trunk.main.2.0.conv1': torch.tensor([1, 4]), 'trunk.main.2.1.conv1@in': torch.tensor([0]),
              'upconv': torch.tensor([2])}
    set_gammas(gammas, pruned)
    x = clip('ToyUniVSR', n=3)
    ref = run(net, x)
    prune(net, pruned, topo)
    b0, b1 = net.trunk.main[2]
    assert b0.reads_all and b0.writes_all and not b1.reads_all and b1.writes_all
    assert max_diff(run(net, x), ref) <= EXACT


def test_residual_scale_is_folded_into_conv2():
    net = ToyUniVSR(num_feat=6, num_block=1, res_scale=0.25).double()
    topo = describe(net)
    pruned = {'trunk.main.2.0.conv2': torch.tensor([3])}
    set_gammas(insert_scaling_factors(net, topo), pruned)
    x = clip('ToyUniVSR')
    ref = run(net, x)
    prune(net, pruned, topo)
    assert max_diff(run(net, x), ref) <= EXACT


def test_prune_through_a_wrapper_and_dtype_follow():
    net = ToyUniVSR(num_feat=6, num_block=1).float()
    topo = describe(net)
    x = clip('ToyUniVSR', dtype=torch.float32)
    ref = run(net, x)
    prune(nn.DataParallel(net), {'trunk.main.2.0.conv1': torch.tensor([0])}, topo)  # no γ: plain L1-style cut
    block = net.trunk.main[2][0]
    assert isinstance(block, RSCBlock) and block.conv1.weight.dtype == torch.float32
    net.double()
    assert block.conv1.weight.dtype == torch.float64 and block.in_idx.dtype == torch.int64
    assert run(net, x.double()).shape == ref.shape


def test_bad_pruned_sets_are_refused():
    net = ToyUniVSR(num_feat=4, num_block=1)
    topo = describe(net)
    with pytest.raises(KeyError, match='does not have'):
        prune(copy.deepcopy(net), {'nonsense.conv1': torch.tensor([0])}, topo)
    with pytest.raises(IndexError, match='out of range'):
        prune(copy.deepcopy(net), {'fusion': torch.tensor([4])}, topo)
    with pytest.raises(ValueError, match='at least one must stay'):
        prune(copy.deepcopy(net), {'fusion': torch.arange(4)}, topo)
    prune(net, {'fusion': torch.tensor([0])}, topo)
    with pytest.raises(SpecError, match='already pruned'):
        prune(net, {'fusion': torch.tensor([1])}, topo)


def test_key_sizes_of_a_pruned_topology():
    net = build('BasicVSR', 8, 1)
    topo = describe(net)
    assert key_size(net, topo, 'upconv2') == 64  # basicsr fixes the HR path at 64 channels
    assert key_size(net, topo, 'backward_trunk.main.2.0.conv1@in') == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_prune_on_cuda_is_exact():
    net = ToyUniVSR(num_feat=8, num_block=2).double().cuda()
    topo = describe(net)
    pruned = {'trunk.main.2.0.conv1': torch.tensor([1, 4]), 'trunk.main.2.1.conv2': torch.tensor([0, 7]),
              'upconv': torch.tensor([2])}
    set_gammas(insert_scaling_factors(net, topo), pruned)
    x = clip('ToyUniVSR').cuda()
    ref = run(net, x)
    prune(net, pruned, topo)
    assert net.trunk.main[2][1].out_idx.is_cuda
    assert max_diff(run(net, x), ref) <= EXACT


@pytest.mark.parametrize('n_out', [3, 6])
def test_rsc_block_inference_path_matches_autograd_path(n_out):
    """Without autograd the scatter writes into the block input in place; the result must not change, and with
    autograd the input must stay untouched."""
    from ssl_plugin.core import RSCBlock
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(4, 5, 3, padding=1).double(), nn.Conv2d(5, n_out, 3, padding=1).double()
    block = RSCBlock(conv1, conv2, nn.ReLU(), torch.tensor([0, 2, 3, 5]), torch.arange(n_out), width=6, inplace=True)
    x = torch.rand(2, 6, 7, 7, dtype=torch.float64)
    x_copy = x.clone()
    y_grad = block(x)
    assert torch.equal(x, x_copy)
    with torch.no_grad():
        x_fast = x.clone()
        y_fast = block(x_fast)
    assert y_fast.data_ptr() == x_fast.data_ptr()
    assert max_diff(y_grad.detach(), y_fast) == 0


def _rsc_block(n_out: int, reads_all: bool = False) -> RSCBlock:
    torch.manual_seed(0)
    in_idx = torch.arange(6) if reads_all else torch.tensor([0, 2, 3, 5])
    conv1, conv2 = nn.Conv2d(len(in_idx), 5, 3, padding=1).double(), nn.Conv2d(5, n_out, 3, padding=1).double()
    out_idx = torch.tensor([1, 4, 5]) if n_out == 3 else torch.arange(6)
    return RSCBlock(conv1, conv2, nn.ReLU(), in_idx, out_idx, width=6)


@pytest.mark.parametrize('n_out,reads_all', [(3, False), (6, False), (3, True)])
def test_rsc_block_channels_last_computes_what_nchw_computes(n_out, reads_all):
    """channels_last inputs take the (pixels, channels) gather / scatter: same values and gradients as the NCHW
    path, the output stays channels_last, and with autograd the input is left untouched."""
    block = _rsc_block(n_out, reads_all)
    x = torch.rand(2, 6, 5, 7, dtype=torch.float64)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert not x_cl.is_contiguous()

    w = torch.rand(2, 6, 5, 7, dtype=torch.float64)

    def forward_backward(inp):
        block.zero_grad()
        inp = inp.clone().requires_grad_()
        y = block(inp)
        (y * w).sum().backward()
        return inp, y.detach(), [p.grad.clone() for p in block.parameters()]

    x_ref, y_ref, grads_ref = forward_backward(x)
    x_cl_in, y, grads = forward_backward(x_cl)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert max_diff(y, y_ref) <= EXACT
    assert torch.equal(x_cl_in.detach(), x_cl)  # autograd path: out of place
    assert max_diff(x_cl_in.grad, x_ref.grad) <= EXACT
    assert all(max_diff(a, b) <= EXACT for a, b in zip(grads, grads_ref))

    with torch.no_grad():
        y_fast = block(x_cl.clone())
    assert y_fast.is_contiguous(memory_format=torch.channels_last)
    assert max_diff(y_fast, y_ref) <= EXACT


def test_pruned_network_in_channels_last_equals_nchw(pruned_case):
    """A whole pruned BasicVSR moved to channels_last (the fast CPU layout) computes the same output."""
    case = pruned_case(*CASES[0])
    net = copy.deepcopy(case.net).to(memory_format=torch.channels_last)
    seen = []
    for m in net.modules():
        if isinstance(m, RSCBlock) and not (m.reads_all and m.writes_all):
            m.register_forward_pre_hook(lambda mod, args: seen.append(
                args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous()))
    assert max_diff(run(net, case.x), case.y_pruned) <= EXACT
    assert seen and all(seen)  # the blocks really received channels_last tensors


@pytest.mark.parametrize('layout', ['batch1', 'batch2', 'channels_last', 'strided'])
def test_rsc_gather_reads_exactly_the_kept_channels(layout):
    """Every gather path (one clip as a (channels, pixels) matrix, a batch, channels_last rows, a non-contiguous view)
    returns ``x[:, in_idx]`` with its gradient flowing back to those channels only."""
    block = _rsc_block(3)
    base = torch.rand(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    x = {'batch1': base[:1], 'batch2': base, 'channels_last': base.contiguous(memory_format=torch.channels_last),
         'strided': base[:1, :, :, 1:]}[layout]
    assert x.is_contiguous() == (layout in ('batch1', 'batch2'))
    g = block.gather(x)
    assert torch.equal(g, x[:, block.in_idx])
    g.sum().backward()
    touched = base.grad.sum(dim=(0, 2, 3)) > 0
    assert touched.nonzero().flatten().tolist() == block.in_idx.tolist()
