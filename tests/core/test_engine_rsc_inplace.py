"""RSC in place: without autograd a pruned block may add its residual into its input only where the topology declares
that input unread elsewhere; everywhere else (a user topology by default, a hooked block) it copies."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from engine_helpers import EXACT, HOST_ARCHS, ToyBlock, build, max_diff
from torch import nn

from ssl_plugin.core import (
    HiddenStateRecorder,
    ResidualUnit,
    RSCBlock,
    Topology,
    apply_spec,
    describe,
    prune,
    register_topology,
    residual_units,
)


class ToyEDSR(nn.Module):
    """EDSR-style single-image net: the body's input is read again after the body (``res = body(x); res += x``)."""

    def __init__(self, feat: int = 6, blocks: int = 2, scale: int = 2):
        super().__init__()
        self.head = nn.Conv2d(3, feat, 3, 1, 1)
        self.body = nn.Sequential(*[ToyBlock(feat, 1.0) for _ in range(blocks)])
        self.upconv = nn.Conv2d(feat, 3 * scale * scale, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        feat = self.head(x)
        res = self.body(feat)
        res += feat
        return self.shuffle(self.upconv(res))


@register_topology(f'{ToyEDSR.__module__}.{ToyEDSR.__qualname__}')
def describe_toy_edsr(net: ToyEDSR) -> Topology:
    # A user topology that says nothing about in-place safety: the default must be the safe one.
    return Topology(arch='ToyEDSR', units=tuple(residual_units(net, 'body')), hidden={})


# conv1 reads 4 of 6, keeps 3 of 6 filters, conv2 writes 4 of 6 (block 0); block 1 writes every channel.
EDSR_PRUNED = {'body.0.conv1@in': torch.tensor([1, 4]), 'body.0.conv1': torch.tensor([0, 2, 5]),
               'body.0.conv2': torch.tensor([0, 3]), 'body.1.conv1': torch.tensor([1])}


@torch.no_grad()
def _zeroed_reference(net: ToyEDSR, pruned: dict) -> ToyEDSR:
    """The dense net with the pruned weights set to 0: an independent reference for what the pruned net computes."""
    ref = copy.deepcopy(net)
    for key, idx in pruned.items():
        if key.endswith('@in'):
            ref.get_submodule(key[:-3]).weight[:, idx] = 0
        else:
            conv = ref.get_submodule(key)
            conv.weight[idx] = 0
            conv.bias[idx] = 0
    return ref


def test_user_topology_is_not_in_place_and_reused_input_survives():
    """Fails when the scatter writes in place regardless of the topology: the body's first block then overwrites
    ``feat``, which ``res += feat`` reads afterwards."""
    torch.manual_seed(0)
    net = ToyEDSR().double()
    x = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    ref = _zeroed_reference(net, EDSR_PRUNED)
    assert not any(u.inplace_safe for u in describe(net).units)
    prune(net, EDSR_PRUNED)
    blocks = [m for m in net.modules() if isinstance(m, RSCBlock)]
    assert len(blocks) == 2 and not any(b.inplace for b in blocks)
    with torch.no_grad():
        y_ref, y = ref(x), net(x)
    assert max_diff(y, y_ref) <= EXACT
    with torch.enable_grad():
        assert max_diff(net(x).detach(), y_ref) <= EXACT


def test_in_place_is_wrong_for_that_topology():
    """The counterpart: the same net with in place forced on computes something else (so the test above can fail)."""
    torch.manual_seed(0)
    net = ToyEDSR().double()
    x = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    ref = _zeroed_reference(net, EDSR_PRUNED)
    prune(net, EDSR_PRUNED)
    for m in net.modules():
        if isinstance(m, RSCBlock):
            m.inplace = True
    with torch.no_grad():
        assert max_diff(net(x), ref(x)) > 1e-3


@pytest.mark.parametrize('arch', HOST_ARCHS)
def test_shipped_topologies_declare_their_blocks_in_place_safe(arch):
    units = [u for u in describe(build(arch, 8, 2)).units if isinstance(u, ResidualUnit)]
    assert units and all(u.inplace_safe for u in units)


def test_shipped_network_takes_the_in_place_path_and_stays_exact(pruned_case):
    case = pruned_case('BasicVSR', 8, 2, 0.5, 'global', 1)
    blocks = [m for m in case.net.modules() if isinstance(m, RSCBlock)]
    assert blocks and all(b.inplace for b in blocks)
    with torch.no_grad():
        assert all(b.writes_in_place() for b in blocks)
    # The pruned output was computed under no_grad, i.e. with every block writing into its input.
    assert max_diff(case.y_pruned, case.y_ref) <= EXACT
    # The in-place path really is in place: the scatter returns its input tensor.
    block = next(b for b in blocks if not b.writes_all)
    x = torch.rand(1, block.width, 5, 6, dtype=torch.float64)
    r = torch.rand(1, block.out_idx.numel(), 5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert block.scatter(x, r).data_ptr() == x.data_ptr()
    assert block.scatter(x, r).data_ptr() != x.data_ptr()  # autograd on: a copy


def test_apply_spec_derives_in_place_from_the_topology(pruned_case):
    case = pruned_case('BasicVSR', 8, 2, 0.5, 'global', 1)
    assert 'inplace' not in json.dumps(case.spec)  # the spec format is unchanged
    net = apply_spec(build('BasicVSR', 8, 2), json.loads(json.dumps(case.spec)))
    assert all(m.inplace for m in net.modules() if isinstance(m, RSCBlock))
    edsr = ToyEDSR().double()
    spec = prune(copy.deepcopy(edsr), EDSR_PRUNED)
    assert not any(m.inplace for m in apply_spec(edsr, spec).modules() if isinstance(m, RSCBlock))


def test_recorded_trunk_states_of_a_shipped_net_are_not_overwritten(pruned_case):
    """TF's recorder keeps each trunk output; with the in-place path on, no later block may write into one: what it
    holds after the forward equals a copy taken when each state was produced."""
    case = pruned_case('BasicVSR', 8, 2, 0.5, 'global', 1)
    copies = []
    handles = [case.net.get_submodule(p).register_forward_hook(lambda m, a, out: copies.append(out.clone()))
               for p in case.topology.hidden.values()]
    try:
        with torch.no_grad(), HiddenStateRecorder(case.net, detach=True) as rec:
            case.net(case.x)
    finally:
        for h in handles:
            h.remove()
    recorded = [s for d in case.topology.hidden for s in rec.states[d]]
    assert len(recorded) == len(copies) == 2 * case.x.shape[1]
    assert len({id(s) for s in recorded}) == len(recorded)
    assert all(any(torch.equal(s, c) for c in copies) for s in recorded)


def test_a_hooked_block_sees_its_input_unchanged():
    """A forward hook on the block gets its input: in place would hand it the output instead."""
    torch.manual_seed(0)
    block = RSCBlock(nn.Conv2d(4, 5, 3, padding=1).double(), nn.Conv2d(5, 3, 3, padding=1).double(), nn.ReLU(),
                     torch.tensor([0, 2, 3, 5]), torch.tensor([1, 4, 5]), width=6, inplace=True)
    x = torch.rand(1, 6, 5, 7, dtype=torch.float64)
    x_copy = x.clone()
    seen = []
    handle = block.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out)))
    with torch.no_grad():
        assert not block.writes_in_place()
        y = block(x)
    assert torch.equal(seen[0][0], x_copy) and torch.equal(x, x_copy) and y.data_ptr() != x.data_ptr()
    handle.remove()
    with torch.no_grad():
        assert block.writes_in_place() and block(x).data_ptr() == x.data_ptr()


def test_a_hidden_state_read_by_an_in_place_block_is_refused():
    net = build('BasicVSR', 8, 2)
    units = tuple(residual_units(net, 'forward_trunk.main.2', inplace_safe=True))
    with pytest.raises(ValueError, match='forward_trunk.main.2.0.*inplace_safe'):
        Topology('BasicVSR', units, hidden={'forward': 'forward_trunk.main.2.0'})
    Topology('BasicVSR', units, hidden={'forward': 'forward_trunk.main.2.1'})  # the last block's output is safe
