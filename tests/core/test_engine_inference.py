"""Inference modes: every mode in the network's precision computes what eager computes (float64, exact)."""
from __future__ import annotations

import pytest
import torch
from engine_helpers import EXACT, max_diff

from ssl_plugin.core import InferenceMode, InferenceRunner, RSCBlock, auto_select, count_macs, fold_rsc
from ssl_plugin.core.inference import FoldedRSCBlock


@pytest.fixture
def case(pruned_case):
    return pruned_case('ToyUniVSR', 8, 2, 0.5, 'global', 1)


@pytest.mark.parametrize('mode', ['eager', 'fold', 'channels_last', 'channels_last+fold'])
def test_exact_modes_match_the_reference(case, mode):
    runner = InferenceRunner(case.net, case.x, mode, warmup=0)
    assert max_diff(runner(case.x), case.y_ref) <= EXACT
    assert any(isinstance(m, RSCBlock) for m in case.net.modules())  # the caller's net is untouched


def test_fold_removes_index_ops_and_costs_macs(case):
    import copy
    folded = fold_rsc(copy.deepcopy(case.net))
    assert not any(isinstance(m, RSCBlock) for m in folded.modules())
    assert any(isinstance(m, FoldedRSCBlock) for m in folded.modules())
    assert count_macs(folded, case.x) > count_macs(case.net, case.x)


def test_compile_is_exact(case):
    runner = InferenceRunner(case.net, case.x, 'fold+compile', warmup=0, compile_backend='aot_eager')
    assert max_diff(runner(case.x), case.y_ref) <= EXACT


def test_auto_picks_a_timed_exact_mode(case):
    choice = auto_select(case.net, case.x, repeats=1)
    assert choice.mode in choice.results and 's' in choice.results[choice.mode]
    assert max_diff(choice.runner(case.x), case.y_ref) <= EXACT


def test_bad_modes_are_refused(case):
    with pytest.raises(ValueError, match='unknown inference option'):
        InferenceMode.parse('channel_last')
    with pytest.raises(ValueError, match='CUDA graphs'):
        InferenceRunner(case.net, case.x, 'graph')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_graph_replays_the_forward(case):
    x = case.x.cuda()
    runner = InferenceRunner(case.net, x, 'channels_last+fold+graph')
    assert max_diff(runner(x).cpu(), case.y_ref) <= EXACT
    with pytest.raises(ValueError, match='captured for'):
        runner(x[:, :1])
