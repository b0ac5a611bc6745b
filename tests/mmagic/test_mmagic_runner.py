"""SSLPruningHook under mmengine's Runner: one continuous run (sparsity -> prune -> finetune) checked against the
reference learning-rate schedule and the optimizer's parameter set, then resumes from checkpoints of both stages that
must end exactly where the continuous run ended."""
import json

import pytest
import torch
from mm_helpers import FINETUNE_ITERS, SPARSITY_ITERS, run_in_process, write_user_config
from mmengine.optim.scheduler import CosineRestartLR

from ssl_plugin.core import RSCBlock
from ssl_plugin.core.algorithm import FINETUNE, SPARSITY

MAX_ITERS = SPARSITY_ITERS + FINETUNE_ITERS
FIX_ITER = SPARSITY_ITERS + 2  # SPyNet is still frozen when the network is pruned
NO_VAL = dict(val_dataloader=None, val_cfg=None, val_evaluator=None)  # validation is covered by the tools test


@pytest.fixture(scope='module')
def continuous(clip_data, tmp_path_factory):
    root = tmp_path_factory.mktemp('continuous')
    config = write_user_config(root, clip_data, fix_iter=FIX_ITER)
    runner = run_in_process(config, root / 'work', **NO_VAL)
    return config, root / 'work', runner


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)  # no pickled modules in our checkpoints


def _reference_lrs(base_lrs):
    """The learning rate each iteration should see: constant during sparsity, then mmagic's cosine schedule."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    opt = torch.optim.Adam([{'params': [p], 'lr': lr} for p, lr in zip(params, base_lrs)])
    sched = CosineRestartLR(opt, by_epoch=False, begin=SPARSITY_ITERS, end=MAX_ITERS, periods=[FINETUNE_ITERS],
                            restart_weights=[1], eta_min=1e-7)
    seen = []
    for _ in range(MAX_ITERS):
        seen.append([g['lr'] for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen, [g['lr'] for g in opt.param_groups]


def test_stages_structure_and_checkpoints(continuous):
    _, work, runner = continuous
    model = runner.model
    ctrl = model.ssl_controller
    assert ctrl.stage == FINETUNE
    rsc = [m for m in model.generator.modules() if isinstance(m, RSCBlock)]
    assert rsc, 'residual blocks were not pruned'
    assert not [n for n, _ in model.generator.named_parameters() if 'ssl_gamma' in n], 'γ survived pruning'
    # checkpoint before the prune: γ present, sparsity stage; the one of the pruning iteration: pruned structure + spec
    # (the resume test from it is the finetune-stage resume)
    before, after = _load(work / 'iter_2.pth'), _load(work / f'iter_{SPARSITY_ITERS}.pth')
    assert before['ssl']['stage'] == SPARSITY
    assert any(k.endswith('ssl_gamma') for k in before['state_dict'])
    assert after['ssl']['stage'] == FINETUNE and after['ssl']['spec']['arch'] == 'BasicVSRNet'
    assert any(k.endswith('.in_idx') for k in after['state_dict'])
    conv = 'generator.backward_resblocks.main.2.0.conv1.weight'
    assert after['state_dict'][conv].shape[0] < before['state_dict'][conv].shape[0]
    # the teacher is neither a parameter of the model nor in its state dict
    assert not any(k.startswith('_teacher') for k in after['state_dict'])
    teacher = ctrl._teacher
    assert teacher is not None and not any(p is q for p in teacher.parameters() for q in model.parameters())
    # the per-layer selection report, logged and saved beside the checkpoints, on the config's training clip
    report = json.loads((work / 'ssl_selection.json').read_text())
    assert report == json.loads(json.dumps(ctrl.report))
    assert {k: v['pruned'] for k, v in report['layers'].items()} == {k: v.numel() for k, v in ctrl.pruned.items()}
    assert report['size'][0] == 4 and report['macs_pruned'] < report['macs_dense']


def test_learning_rate_continuous_and_every_parameter_optimized(continuous):
    _, work, runner = continuous
    hub = runner.message_hub
    base_lr = list(hub.get_scalar('train/base_lr').data[0][-MAX_ITERS:])
    spynet_lr = list(hub.get_scalar('train/lr').data[0][-MAX_ITERS:])  # group 0 is SPyNet (lr_mult 0.125)
    seen, final = _reference_lrs([2e-4, 2e-4 * 0.125])
    assert base_lr == pytest.approx([s[0] for s in seen], rel=1e-6)
    assert spynet_lr == pytest.approx([s[1] for s in seen], rel=1e-6)
    wrapper = runner.optim_wrapper
    in_opt = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    names = [n for n, p in runner.model.named_parameters() if id(p) not in in_opt]
    assert not names, f'parameters missing from the rebuilt optimizer: {names[:5]}'
    for group in wrapper.optimizer.param_groups:
        name = next(n for n, p in runner.model.named_parameters() if p is group['params'][0])
        expected = final[1] if 'spynet' in name else final[0]
        assert group['lr'] == pytest.approx(expected, rel=1e-6), name


def test_spynet_frozen_through_prune_then_trained(continuous):
    _, work, runner = continuous
    key = 'generator.spynet.basic_module.0.basic_module.0.conv.weight'
    states = {i: _load(work / f'iter_{i}.pth')['state_dict'][key] for i in (2, SPARSITY_ITERS, MAX_ITERS)}
    assert torch.equal(states[2], states[SPARSITY_ITERS])        # fix_iter: frozen
    assert not torch.equal(states[SPARSITY_ITERS], states[MAX_ITERS])  # unfrozen after fix_iter: still optimized


@pytest.mark.parametrize('start', [2, SPARSITY_ITERS], ids=['sparsity', 'finetune'])
def test_resume_continues_exactly(continuous, start, tmp_path):
    config, work, _ = continuous
    resumed = run_in_process(config, tmp_path / 'work', resume_from=work / f'iter_{start}.pth', **NO_VAL)
    assert resumed.iter == MAX_ITERS
    want, got = _load(work / f'iter_{MAX_ITERS}.pth'), _load(tmp_path / 'work' / f'iter_{MAX_ITERS}.pth')
    assert want['state_dict'].keys() == got['state_dict'].keys()
    for k, v in want['state_dict'].items():
        torch.testing.assert_close(got['state_dict'][k], v, rtol=1e-5, atol=1e-7, msg=k)
    assert got['ssl']['spec'] == want['ssl']['spec'] and got['ssl']['stage'] == FINETUNE
    lrs = [g['lr'] for g in want['optimizer']['param_groups']]
    assert [g['lr'] for g in got['optimizer']['param_groups']] == pytest.approx(lrs, rel=1e-6)
    for p, st in want['optimizer']['state'].items():
        torch.testing.assert_close(got['optimizer']['state'][p]['exp_avg'], st['exp_avg'], rtol=1e-5, atol=1e-9)


def _steps(ckpt) -> set:
    return {int(st['step']) for st in ckpt['optimizer']['state'].values()}


def test_optimizer_state_at_the_cut_follows_optimizer_at_prune(continuous, clip_data, tmp_path):
    """Default 'fresh': the finetuning stage starts a new Adam (nothing saved at the pruning iteration, then at most
    one step per finetuning iteration); 'carry': surviving tensors keep their moments and steps (as on BasicSR)."""
    config, work, _ = continuous
    assert not _load(work / f'iter_{SPARSITY_ITERS}.pth')['optimizer']['state']
    assert max(_steps(_load(work / f'iter_{MAX_ITERS}.pth'))) == FINETUNE_ITERS
    child = tmp_path / 'carry.py'
    child.write_text(f'_base_ = {str(config)!r}\nfinetune_iters = 1\n'
                     f"model = dict(ssl=dict(optimizer_at_prune='carry'), train_cfg=dict(fix_iter={SPARSITY_ITERS}))\n"
                     f'train_cfg = dict(max_iters={SPARSITY_ITERS + 1}, val_interval={SPARSITY_ITERS + 1})\n'
                     f'param_scheduler = dict(begin={SPARSITY_ITERS}, periods=[1])\n')
    run_in_process(child, tmp_path / 'work', **NO_VAL)
    assert max(_steps(_load(tmp_path / 'work' / f'iter_{SPARSITY_ITERS + 1}.pth'))) == SPARSITY_ITERS + 1


def test_gamma_learning_rate_through_paramwise_custom_keys(clip_data, tmp_path):
    """MMagic users give γ their own learning rate with mmengine's ``paramwise_cfg.custom_keys``: the hook's optimizer
    rebuild after inserting γ applies it (one group per γ tensor at lr x 10), and pruning removes those groups."""
    extra = ("optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'spynet': dict(lr_mult=0.125), "
             "'ssl_gamma': dict(lr_mult=10.0)}))\n")
    config = write_user_config(tmp_path, clip_data, name='gamma_lr', extra=extra)
    run_in_process(config, tmp_path / 'work', **NO_VAL)
    sparse, pruned = _load(tmp_path / 'work' / 'iter_2.pth'), _load(tmp_path / 'work' / f'iter_{MAX_ITERS}.pth')
    assert sparse['ssl']['stage'] == SPARSITY
    lrs = [g['lr'] for g in sparse['optimizer']['param_groups']]
    base = min(lrs) / 0.125  # SPyNet's groups have the smallest lr
    n_gammas = sum(k.endswith(('.ssl_gamma', '.ssl_gamma_in')) for k in sparse['state_dict'])
    assert n_gammas > 0 and sum(lr == pytest.approx(10 * base) for lr in lrs) == n_gammas
    # One group per tensor: pruning removed exactly the γ groups and kept every weight's.
    assert len(pruned['optimizer']['param_groups']) == len(lrs) - n_gammas


def test_pruned_checkpoint_starts_a_new_finetuning_run(continuous, tmp_path):
    """Prune on one data set, finetune on another: ``load_from`` = a pruned checkpoint (no --resume) starts a new run
    in the finetuning stage with the checkpoint's spec and this config's SSL options; TF needs ``ssl.tf_teacher``."""
    config, work, _ = continuous
    pruned = work / f'iter_{MAX_ITERS}.pth'
    saved = _load(pruned)
    teacher = tmp_path / 'dense.pth'
    torch.save({'state_dict': {f'generator.{k}': v for k, v in saved['ssl']['teacher_state'].items()}}, teacher)
    for name, extra in (('no_teacher', ''), ('teacher', f'model = dict(ssl=dict(tf_teacher={str(teacher)!r}))\n')):
        child = tmp_path / f'{name}.py'
        child.write_text(f'_base_ = {str(config)!r}\nload_from = {str(pruned)!r}\n'
                         'train_cfg = dict(max_iters=2, val_interval=2)\n'
                         'param_scheduler = dict(begin=0, periods=[2])\n' + extra)
        runner = run_in_process(child, tmp_path / name, **NO_VAL)
        ctrl = runner.model.ssl_controller
        assert ctrl.stage == FINETUNE and ctrl.spec == saved['ssl']['spec'] and ctrl.sir is None
        assert ctrl.uses_tf == (name == 'teacher')
        assert ('train/loss_tf' in runner.message_hub.log_scalars) == (name == 'teacher')
        assert 'train/loss_sir' not in runner.message_hub.log_scalars
        out = _load(tmp_path / name / 'iter_2.pth')
        assert out['meta']['iter'] == 2 and out['ssl']['stage'] == FINETUNE


def test_method_aligned_thins_the_hidden_state_and_checkpoints_load(clip_data, tmp_path):
    """Method aligned under the Runner: the tied skip γ are optimized once (the config's paramwise custom_keys; torch
    refuses a parameter in two groups), both trunks' hidden states get thinner by the same count, and the
    sparsity-stage checkpoint (tied γ listed under each writer) loads strictly into a fresh generator."""
    from mmagic.models.editors import BasicVSRNet

    from ssl_plugin.core import checkpoint as core_ckpt

    config = write_user_config(tmp_path, clip_data, name='aligned', fix_iter=FIX_ITER,
                               extra="model['ssl']['method'] = 'aligned'\n")
    runner = run_in_process(config, tmp_path / 'work', **NO_VAL)
    ctrl, generator = runner.model.ssl_controller, runner.model.generator
    assert ctrl.stage == FINETUNE
    kept = [ctrl.spec['units'][t]['channels'] for t in ('backward_resblocks', 'forward_resblocks')]
    assert generator.mid_channels == len(kept[0]) == len(kept[1]) < 8
    sparse = _load(tmp_path / 'work' / 'iter_2.pth')
    state = {k[len('generator.'):]: v for k, v in sparse['state_dict'].items() if k.startswith('generator.')}
    # tied on each trunk's input conv and its block's conv2 (one block)
    assert sum(k.endswith('.ssl_gamma_skip') for k in state) == 4
    fresh = BasicVSRNet(mid_channels=8, num_blocks=1)
    assert core_ckpt.load_network_state(fresh, state) == 'scaled'
    tied = fresh.backward_resblocks.main[0].ssl_gamma_skip
    assert tied is fresh.backward_resblocks.main[2][0].conv2.ssl_gamma_skip
    assert torch.equal(tied, state['backward_resblocks.main.0.ssl_gamma_skip'])
