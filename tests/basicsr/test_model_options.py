"""SSLVideoRecurrentModel built in-process: option validation at start (errors name the key), checkpoint structure
rules (pruned / dense / mismatching shapes), and rebuilding a pruned network from its checkpoint."""
import subprocess
import sys

import pytest
import torch
from bsr_helpers import TRAIN, fast_options, merge, parsed, write_options

import ssl_plugin  # noqa: F401
from ssl_plugin.basicsr_plugin import register

register()
from basicsr.archs import build_network  # noqa: E402
from basicsr.models import build_model  # noqa: E402

from ssl_plugin.basicsr_plugin.checkpoint import load_pruned_network  # noqa: E402
from ssl_plugin.core import SpecError  # noqa: E402


def _build(opt, root, is_train=True):
    return build_model(parsed(opt, root, is_train=is_train))


def _opt(tiny_data, **changes):
    return merge(fast_options(tiny_data, 'opts'), **changes)


@pytest.mark.parametrize('changes, key', [
    ({'ssl__pruning_ratio': 1.5}, 'ssl.pruning_ratio'),
    ({'ssl__pruning_ratio': 0}, 'ssl.pruning_ratio'),
    ({'ssl__method': 'magnitude'}, 'ssl.method'),
    ({'ssl__scope': 'layer'}, 'ssl.scope'),
    ({'ssl__max_layer_ratio': 1.5}, 'ssl.max_layer_ratio'),
    ({'ssl__target_mac_ratio': 2.0}, 'ssl.target_mac_ratio chooses the pruning ratio'),
    ({'ssl__target_mac_ratio': 0.5, 'ssl__pruning_ratio': ...}, 'ssl.target_mac_ratio must be a number above 1'),
    ({'ssl__budget_size': [40, 40]}, 'ssl.budget_size'),
    # SPyNet is never pruned: a tiny BasicVSRUni cannot lose 4/5 of its parameters
    ({'ssl__target_params_ratio': 5.0, 'ssl__pruning_ratio': ...}, 'ssl.target_params_ratio = 5.0: unreachable'),
    ({'ssl__skip': ['forward_trunk.main.9.*']}, 'ssl.skip'),
    ({'ssl__colour': 'red'}, 'ssl.colour'),
    ({'ssl__reg': {'delta': -1.0}}, 'ssl.reg.delta'),
    ({'ssl__reg': {'stabilize_iter': 100}, 'train__total_iter': 8}, 'ssl.reg'),
    # reg of fast_options: a 4-iteration sparsity stage; pruning at the last iteration finetunes nothing
    ({'train__total_iter': 4}, 'ssl.reg: the sparsity stage takes 4 iterations and ends with the run'),
])
def test_invalid_ssl_options_stop_at_start_naming_the_key(tiny_data, tmp_path, changes, key):
    with pytest.raises(ValueError, match=key.replace('.', r'\.')):
        _build(_opt(tiny_data, **changes), tmp_path)


@pytest.mark.parametrize('changes, match', [
    ({'train__tf_opts': {'type': 'TFLoss'}, 'train__tf_opt': ...}, r'train\.tf_opts: .*did you mean train\.tf_opt\?'),
    ({'train__sir_opts': {'type': 'SIRLoss'}}, r'did you mean train\.sir_opt\?'),
    ({'train__ssl_gama_lr_mul': 10}, r'did you mean train\.ssl_gamma_lr_mul\?'),
    ({'train__scheduler_starts_at_finetun': True}, r'did you mean train\.scheduler_starts_at_finetune\?'),
    ({'logger__ssl_per_layers': True}, r'did you mean logger\.ssl_per_layer\?'),
    ({'sll': {'pruning_ratio': 0.3}}, r'^sll: unknown option; did you mean ssl\?'),
])
def test_misspelt_ssl_keys_in_basicsr_sections_name_the_right_key(tiny_data, tmp_path, changes, match):
    """BasicSR ignores keys it does not read: without this check TF (or the whole ssl section) would silently be off."""
    with pytest.raises(ValueError, match=match):
        _build(_opt(tiny_data, **changes), tmp_path)


@pytest.mark.parametrize('fix_flow', [3, 100])
def test_fix_flow_under_ddp_needs_find_unused_parameters(tiny_data, tmp_path, fix_flow):
    """Said at start, not as DDP's reducer error at iteration 2 (the model is built as BasicSR builds it for a
    distributed run; the check comes before any process group is needed)."""
    opt = parsed(_opt(tiny_data, train__fix_flow=fix_flow, find_unused_parameters=False), tmp_path)
    opt['dist'] = True
    with pytest.raises(ValueError, match=r'train\.fix_flow = \d+ freezes .*set find_unused_parameters: true'):
        build_model(opt)


def test_invalid_option_stops_the_cli_run(tiny_data, tmp_path):
    yml = write_options(tmp_path, _opt(tiny_data, ssl__method='magnitude'))
    proc = subprocess.run([sys.executable, str(TRAIN), '-opt', str(yml)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and 'ssl.method' in proc.stderr


def test_unsupported_network_is_named(tiny_data, tmp_path):
    opt = _opt(tiny_data, network_g={'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1})
    with pytest.raises(TypeError, match='cannot prune .*MSRResNet'):
        _build(opt, tmp_path)


@pytest.fixture
def pruned_run(tiny_data, tmp_path):
    """A model pruned at once (method l1) and its saved checkpoint."""
    opt = _opt(tiny_data, ssl__method='l1')
    model = _build(opt, tmp_path)
    (tmp_path / 'experiments' / 'opts' / 'models').mkdir(parents=True)
    model.save_network([model.net_g, model.net_g_ema], 'net_g', 1, param_key=['params', 'params_ema'])
    return opt, model, tmp_path / 'experiments' / 'opts' / 'models' / 'net_g_1.pth'


@pytest.mark.parametrize('strict', [True, False])
def test_pretrained_weights_of_another_width_are_an_error(tiny_data, tmp_path, strict):
    wide = build_network({'type': 'BasicVSRUni', 'num_feat': 16, 'num_block': 1, 'num_feat_hr': 8})
    path = tmp_path / 'wide.pth'
    torch.save({'params': wide.state_dict()}, path)
    opt = _opt(tiny_data, path__pretrain_network_g=str(path), path__strict_load_g=strict)
    with pytest.raises(ValueError, match=r'path\.pretrain_network_g .*shapes do not fit'):
        _build(opt, tmp_path)   # never BasicSR's silent '.ignore' with strict_load_g: false


@pytest.mark.parametrize('strict', [True, False])
def test_pretrained_weights_under_another_key_prefix_are_an_error(tiny_data, tmp_path, strict):
    """With strict_load_g: false BasicSR would load none of these tensors and S would be chosen on random weights."""
    opt = _opt(tiny_data)
    net = build_network(opt['network_g'])
    path = tmp_path / 'prefixed.pth'
    torch.save({'params': {f'net.{k}': v for k, v in net.state_dict().items()}}, path)
    opt = merge(opt, path__pretrain_network_g=str(path), path__strict_load_g=strict)
    with pytest.raises(ValueError, match=r'path\.pretrain_network_g .*prefixed\.pth.*tensors were not loaded '
                                         r'\(missing, e\.g\. spynet\..*does not have \(e\.g\. net\.spynet'):
        _build(opt, tmp_path)


def _one_step(model, lq_size=36):
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 3, lq_size, lq_size)
    model.feed_data({'lq': lq, 'gt': torch.rand(1, 3, 3, lq_size * 4, lq_size * 4)})
    model.optimize_parameters(1)
    return model.log_dict


def test_pruned_checkpoint_starts_a_new_run_in_the_finetune_stage(tiny_data, pruned_run, tmp_path):
    """Prune on one data set, finetune on another: a pruned checkpoint as the dense model starts a new run that
    finetunes it with its spec (no stale SIR state); TF needs a named dense teacher, else it is off and logged."""
    _, first, path = pruned_run
    opt = _opt(tiny_data, path__pretrain_network_g=str(path))
    model = _build(opt, tmp_path / 'no_teacher')
    ctrl = model.controller
    assert ctrl.stage == 'finetune' and ctrl.spec == first.controller.spec and ctrl.sir is None
    assert {k: torch.equal(v, first.controller.pruned[k]) for k, v in ctrl.pruned.items()} == \
        {k: True for k in first.controller.pruned}
    saved = torch.load(path, map_location='cpu', weights_only=True)['params']
    assert all(torch.equal(v, saved[k]) for k, v in model.net_g.state_dict().items())
    assert not ctrl.uses_tf and 'l_tf' not in _one_step(model)

    teacher = tmp_path / 'dense.pth'
    torch.save({'params': first.controller.teacher_state}, teacher)
    model = _build(merge(opt, ssl__tf_teacher=str(teacher)), tmp_path / 'teacher')
    assert model.controller.uses_tf and model.controller.stage == 'finetune'
    assert set(_one_step(model)) == {'l_pix', 'l_tf'}


def test_tf_teacher_must_be_a_dense_checkpoint_of_the_network(tiny_data, pruned_run, tmp_path):
    _, _, path = pruned_run
    opt = _opt(tiny_data, path__pretrain_network_g=str(path), ssl__tf_teacher=str(path))
    with pytest.raises(ValueError, match=r'ssl\.tf_teacher .*must be a dense network'):
        _build(opt, tmp_path / 'a')
    wide = tmp_path / 'wide.pth'
    torch.save({'params': build_network({'type': 'BasicVSRUni', 'num_feat': 16, 'num_block': 1,
                                         'num_feat_hr': 8}).state_dict()}, wide)
    with pytest.raises(ValueError, match=r'ssl\.tf_teacher .*not a dense checkpoint of this network'):
        _build(merge(opt, ssl__tf_teacher=str(wide)), tmp_path / 'b')


def test_sparsity_stage_checkpoint_cannot_seed_a_new_run(tiny_data, tmp_path):
    model = _build(_opt(tiny_data), tmp_path)
    assert model.controller.stage == 'sparsity'
    (tmp_path / 'experiments' / 'opts' / 'models').mkdir(parents=True)
    model.save_network(model.net_g, 'net_g', 1)
    path = tmp_path / 'experiments' / 'opts' / 'models' / 'net_g_1.pth'
    with pytest.raises(ValueError, match=r'path\.pretrain_network_g .*sparsity-stage SSL checkpoint'):
        _build(_opt(tiny_data, path__pretrain_network_g=str(path)), tmp_path / 'again')


def test_selection_report_is_logged_and_saved_beside_the_checkpoints(tiny_data, tmp_path):
    import json
    opt = _opt(tiny_data, ssl__pruning_ratio=..., ssl__target_mac_ratio=1.04, ssl__budget_size=[2, 40, 40],
               ssl__scope='global_normalized', ssl__max_layer_ratio=0.75)
    models = tmp_path / 'experiments' / 'opts' / 'models'
    models.mkdir(parents=True)  # BasicSR's make_exp_dirs, before the model is built
    ctrl = _build(opt, tmp_path).controller
    report = json.loads((models / 'ssl_selection.json').read_text())
    assert report == json.loads(json.dumps(ctrl.report))
    assert abs(report['mac_ratio'] / 1.04 - 1) <= 0.02 and report['pruning_ratio'] == ctrl.ratio
    assert report['size'] == [2, 40, 40] and report['settings']['target_mac_ratio'] == 1.04
    assert {k: v['pruned'] for k, v in report['layers'].items()} == {k: v.numel() for k, v in ctrl.pruned.items()}
    assert all(v['pruned'] <= 0.75 * v['units'] for v in report['layers'].values())


def test_tf_is_on_by_default_and_off_with_a_null_tf_opt(tiny_data, tmp_path):
    assert _build(_opt(tiny_data, train__tf_opt=...), tmp_path / 'a').cri_tf is not None
    model = _build(_opt(tiny_data, train__tf_opt=None), tmp_path / 'b')
    assert model.cri_tf is None and model.controller.tf_loss is None


def test_pruned_checkpoint_does_not_fit_a_network_of_another_width(tiny_data, pruned_run):
    opt, _, path = pruned_run
    test_opt = merge(opt, path__pretrain_network_g=str(path), network_g__num_feat=16)
    with pytest.raises(SpecError, match=r'path\.pretrain_network_g .*different width'):
        _build(test_opt, path.parent.parent, is_train=False)


def test_pruned_checkpoint_is_rebuilt_for_testing(tiny_data, pruned_run):
    opt, model, path = pruned_run
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert ckpt['ssl_spec']['arch'] == 'BasicVSRUni'
    tester = _build(merge(opt, path__pretrain_network_g=str(path)), path.parent.parent, is_train=False)
    # Another project's way: a fresh host network + the helper.
    other = load_pruned_network(build_network(opt['network_g']), str(path)).eval()
    lq = torch.rand(1, 3, 3, 36, 36)
    model.net_g.eval()
    with torch.no_grad():
        want = model.net_g(lq)
        torch.testing.assert_close(tester.net_g(lq), want)
        torch.testing.assert_close(other(lq), want)
    assert sum(p.numel() for p in tester.net_g.parameters()) < \
        sum(p.numel() for p in build_network(opt['network_g']).parameters())


def test_ema_is_pruned_identically_and_teacher_is_dense(tiny_data, pruned_run):
    _, model, _ = pruned_run
    shapes = {k: v.shape for k, v in model.net_g.state_dict().items()}
    assert shapes == {k: v.shape for k, v in model.net_g_ema.state_dict().items()}
    dense = build_network(model.opt['network_g'])
    teacher = model.controller.teacher()
    assert {k: v.shape for k, v in teacher.state_dict().items()} == {k: v.shape for k, v in dense.state_dict().items()}
    assert not any(p.requires_grad for p in teacher.parameters())


def test_cpu_validation_keeps_metric_buffers_on_the_model_device(tiny_data, tmp_path):
    opt = _opt(tiny_data)
    model = _build(opt, tmp_path)
    from basicsr.data import build_dataloader, build_dataset
    val_opt = parsed(opt, tmp_path)['datasets']['val']
    loader = build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0, dist=False)
    model.validation(loader, 1, None, save_img=False)
    assert all(t.device == model.device for t in model.metric_results.values())
    assert model.best_metric_results['REDS4']['psnr']['val'] > 10


@pytest.mark.parametrize('mode', ['fresh', 'carry'])
def test_optimizer_state_at_the_cut_follows_optimizer_at_prune(tiny_data, tmp_path, mode):
    """``ssl.optimizer_at_prune``: 'fresh' starts the finetuning stage with a new Adam (step 1 after one finetuning
    iteration), 'carry' keeps every surviving tensor's moments and step count (core/optim_state.py), on the same
    rule as MMagic's hook."""
    model = _build(_opt(tiny_data, ssl__optimizer_at_prune=mode, train__fix_flow=0), tmp_path)
    n_sparse = model.controller.cfg.sparsity_iters
    torch.manual_seed(0)
    for it in range(1, n_sparse + 2):  # the controller steps in optimize_parameters: pruning at the stage's end
        model.feed_data({'lq': torch.rand(1, 3, 3, 36, 36), 'gt': torch.rand(1, 3, 3, 144, 144)})
        model.optimize_parameters(it)
    assert model.controller.stage == 'finetune'
    steps = {int(st['step']) for st in model.optimizer_g.state.values()}
    assert steps, 'no optimizer state after a finetuning step'
    if mode == 'fresh':
        assert steps == {1}
    else:
        assert min(steps) > 1 and max(steps) == n_sparse + 1


def test_optimizer_at_prune_is_validated(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"ssl\.optimizer_at_prune must be one of \('fresh', 'carry'\)"):
        _build(_opt(tiny_data, ssl__optimizer_at_prune='keep'), tmp_path)


def test_method_aligned_runs_prunes_the_hidden_state_and_rebuilds_for_testing(tiny_data, tmp_path):
    """Method aligned through the BasicSR model: the tied γ get their own lr group once, the cut makes the hidden
    state thinner in net_g and the EMA network alike, finetuning adds TF at the kept channels, and a test model
    rebuilds the same network from the checkpoint."""
    opt = _opt(tiny_data, ssl__method='aligned', train__ssl_gamma_lr_mul=10)
    model = _build(opt, tmp_path)
    ctrl = model.controller
    assert ctrl.stage == 'sparsity' and ctrl.pruned['forward_trunk@skip'].numel()
    gamma_group = model.optimizer_g.param_groups[-1]['params']
    assert len(gamma_group) == len(ctrl.pruned)  # the tied skip γ once, not once per writer
    for _ in range(ctrl.cfg.sparsity_iters):
        assert 'l_sir' in _one_step(model)
    assert ctrl.stage == 'finetune'
    kept = ctrl.spec['units']['forward_trunk']['channels']
    assert model.net_g.num_feat == model.net_g_ema.num_feat == len(kept) < 8
    assert {k: v.shape for k, v in model.net_g.state_dict().items()} == \
        {k: v.shape for k, v in model.net_g_ema.state_dict().items()}
    assert set(_one_step(model)) == {'l_pix', 'l_tf'}
    (tmp_path / 'experiments' / 'opts' / 'models').mkdir(parents=True)
    model.save_network([model.net_g, model.net_g_ema], 'net_g', 9, param_key=['params', 'params_ema'])
    path = tmp_path / 'experiments' / 'opts' / 'models' / 'net_g_9.pth'
    tester = _build(merge(opt, path__pretrain_network_g=str(path)), tmp_path, is_train=False)
    lq = torch.rand(1, 3, 3, 36, 36)
    model.net_g.eval()
    with torch.no_grad():
        torch.testing.assert_close(tester.net_g(lq), model.net_g(lq))
