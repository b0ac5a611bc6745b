"""Pruning spec: JSON round trip, rebuild on a fresh host network, clear errors for a spec that does not fit."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from engine_helpers import build, max_diff, run

from ssl_plugin.core import (
    FORMAT_VERSION,
    SpecError,
    apply_spec,
    describe,
    insert_scaling_factors,
    l1_scores,
    prune,
    select_unimportant,
)
from ssl_plugin.core.spec import dumps

# The first surgery case of each architecture (shared with test_engine_surgery through the session cache).
CASES = [
    ('BasicVSR', 8, 2, 0.5, 'global', 1),
    ('IconVSR', 8, 1, 0.5, 'global', 1),
    ('BasicVSRNet', 8, 2, 0.5, 'global', 1),
    ('BasicVSRUni', 8, 2, 0.5, 'global', 1),
    ('ToyUniVSR', 12, 3, 0.7, 'local', 2),
]


def spec_of(arch='BasicVSR', feat=8, blocks=2, ratio=0.5):
    """A spec made without running the network (cheap): L1 selection and the cut only."""
    net = build(arch, feat, blocks)
    topo = describe(net)
    return prune(net, select_unimportant(l1_scores(net, topo), ratio), topo)


@pytest.mark.parametrize('args', CASES, ids=[c[0] for c in CASES])
def test_fresh_network_plus_spec_loads_strictly_and_reproduces_outputs(args, pruned_case):
    case = pruned_case(*args)
    text = dumps(case.spec)
    assert json.loads(text) == case.spec  # JSON round trip is lossless
    assert case.spec['format_version'] == 1 and case.spec['arch'] == args[0]  # format 2 only for method aligned
    fresh = build(args[0], args[1], args[2], seed=123)  # other random weights: everything must come from the state
    assert apply_spec(fresh, text) is fresh
    fresh.load_state_dict(case.net.state_dict(), strict=True)
    assert str(fresh) == str(case.net)  # same skeleton: every conv shape, every RSC block's widths
    if args[0] != 'IconVSR':  # IconVSR's forward is the slowest here; same skeleton + same state is the same function
        assert max_diff(run(fresh, case.x), case.y_pruned) == 0.0


def test_spec_is_plain_json_data():
    spec = spec_of()
    assert json.loads(json.dumps(spec)) == spec
    entry = spec['units']['backward_trunk.main.2.0']
    assert entry['kind'] == 'residual' and entry['total'] == {'in': 8, 'mid': 8, 'out': 8}
    assert all(isinstance(i, int) for f in ('in', 'mid', 'out') for i in entry[f])
    assert spec['units']['upconv1']['kind'] == 'pixel_shuffle' and spec['units']['fusion']['kind'] == 'plain'


def test_spec_from_dict_and_from_string_give_the_same_skeleton():
    spec = spec_of()
    a, b = apply_spec(build('BasicVSR', 8, 2), spec), apply_spec(build('BasicVSR', 8, 2), dumps(spec))
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_wrong_architecture_is_refused():
    with pytest.raises(SpecError, match='spec is for BasicVSR, the network is BasicVSRNet'):
        apply_spec(build('BasicVSRNet', 8, 2), spec_of())


def test_wrong_width_is_refused():
    with pytest.raises(SpecError, match=r'made for 8 .* units, this network has 12 \(different width\?\)'):
        apply_spec(build('BasicVSR', 12, 2), spec_of(feat=8))


@pytest.mark.parametrize('blocks', [1, 3])
def test_wrong_depth_is_refused(blocks):
    with pytest.raises(SpecError, match='different depth'):
        apply_spec(build('BasicVSR', 8, blocks), spec_of(blocks=2))


def test_spec_onto_a_network_with_gamma_or_already_pruned_is_refused():
    spec = spec_of()
    net = build('BasicVSR', 8, 2)
    insert_scaling_factors(net, describe(net))
    with pytest.raises(SpecError, match='fresh dense network'):
        apply_spec(net, spec)
    net = apply_spec(build('BasicVSR', 8, 2), spec)
    with pytest.raises(SpecError, match='already pruned'):
        apply_spec(net, spec)


def _broken(mutate):
    def make():
        spec = copy.deepcopy(spec_of())
        mutate(spec)
        return spec
    return make


def _set(path, field, value):
    def mutate(spec):
        spec['units'][path][field] = value
    return mutate


# name -> (spec or a function making it from a valid one, what the message must say); built inside the test so that
# collection needs no host network.
GARBAGE = {
    'not json': ('{"arch": BasicVSR', 'spec'),
    'json list': ('[1, 2, 3]', 'a pruning spec is a dict'),
    'empty dict': ({}, 'a pruning spec is a dict'),
    'units not a dict': (_broken(lambda s: s.update(units=[1, 2])), 'units'),
    'entry not a dict': (_broken(lambda s: s['units'].update(fusion=3)), 'fusion'),
    'future version': (_broken(lambda s: s.update(format_version=FORMAT_VERSION + 1)), 'format_version'),
    'unknown kind': (_broken(_set('fusion', 'kind', 'grouped')), "unknown kind 'grouped'"),
    'unsorted': (_broken(_set('fusion', 'out', [3, 1])), 'sorted list of distinct ints'),
    'duplicates': (_broken(_set('fusion', 'out', [1, 1])), 'sorted list of distinct ints'),
    'empty': (_broken(_set('fusion', 'out', [])), 'non-empty'),
    'floats': (_broken(_set('fusion', 'out', [0.0, 1.0])), 'ints'),
    'no total': (_broken(_set('fusion', 'total', None)), 'total'),
    'index too large': (_broken(_set('upconv1', 'groups', [0, 8])), 'out of range'),
    'negative index': (_broken(_set('upconv1', 'groups', [-1, 0])), 'upconv1'),
    'kind swapped': (_broken(_set('fusion', 'kind', 'pixel_shuffle')), 'fusion'),
}


@pytest.mark.parametrize('name', list(GARBAGE))
def test_garbage_spec_is_a_spec_error(name):
    spec, message = GARBAGE[name]
    net = build('BasicVSR', 8, 2)
    before = {k: v.shape for k, v in net.state_dict().items()}
    with pytest.raises(SpecError, match=message):
        apply_spec(net, spec() if callable(spec) else spec)
    assert {k: v.shape for k, v in net.state_dict().items()} == before  # refused before anything was cut


def test_failed_apply_leaves_a_network_that_still_runs_dense():
    """A spec refused for a mismatch does not half-prune the network."""
    net = build('BasicVSR', 8, 1)
    before = {k: v.shape for k, v in net.state_dict().items()}
    with pytest.raises(SpecError):
        apply_spec(net, spec_of(blocks=2))
    assert {k: v.shape for k, v in net.state_dict().items()} == before
    assert torch.is_tensor(next(net.parameters()))
