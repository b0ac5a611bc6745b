"""End-to-end runs of ``ssl_plugin/train.py`` / ``test.py`` on CPU: Algorithm 1 driven by BasicSR's loop, checkpoints,
resume equality, learning-rate continuity, fix_flow, logging, evaluation of the pruned checkpoint."""
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from bsr_helpers import TEST, TRAIN, fast_options, merge, run_entry, write_options

TOTAL, PRUNE_AT, FIX_FLOW = 8, 4, 4   # SIR: 2 growth iterations (0.05 -> 0.1) + 2 stabilising -> prune after iter 4
LR0, FLOW_MUL, ETA_MIN = 2e-3, 0.125, 1e-7


def _opt(data, name, **changes):
    opt = fast_options(data, name)
    opt['train'].update(total_iter=TOTAL, fix_flow=FIX_FLOW, scheduler_starts_at_finetune=True)
    opt['logger'].update(save_checkpoint_freq=1, use_tb_logger=True, ssl_per_layer=True)
    return merge(opt, **changes)


def _exp(cwd: Path, name: str) -> Path:
    return cwd / 'experiments' / name


def _log_text(exp: Path) -> str:
    return '\n'.join(p.read_text() for p in sorted(exp.glob('train_*.log')))


@pytest.fixture(scope='module')
def straight(tiny_data, tmp_path_factory):
    cwd = tmp_path_factory.mktemp('straight')
    opt = _opt(tiny_data, 'ssl_straight')
    yml = write_options(cwd, opt)
    run_entry(TRAIN, yml, cwd)
    exp = _exp(cwd, opt['name'])
    return SimpleNamespace(cwd=cwd, opt=opt, yml=yml, exp=exp, log=_log_text(exp))


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_checkpoints_hold_weights_spec_and_controller(straight):
    models, states = straight.exp / 'models', straight.exp / 'training_states'
    for it in range(1, TOTAL + 1):
        ckpt = _load(models / f'net_g_{it}.pth')   # weights_only: no pickled modules
        params, ema = ckpt['params'], ckpt['params_ema']
        has_gamma = any(k.endswith(('.ssl_gamma', '.ssl_gamma_in')) for k in params)
        if it < PRUNE_AT:
            assert 'ssl_spec' not in ckpt and has_gamma
        else:
            assert ckpt['ssl_spec']['arch'] == 'BasicVSRUni' and not has_gamma
        # The EMA network has exactly net_g's structure (pruned identically).
        assert {k: tuple(v.shape) for k, v in ema.items()} == {k: tuple(v.shape) for k, v in params.items()}
        state = _load(states / f'{it}.state')
        assert state['iter'] == it
        assert state['ssl']['stage'] == ('sparsity' if it < PRUNE_AT else 'finetune')
    dense_width = _load(models / 'net_g_1.pth')['params']['forward_trunk.main.2.0.conv1.weight'].shape[0]
    pruned = _load(models / 'net_g_latest.pth')
    assert pruned['params']['forward_trunk.main.2.0.conv1.weight'].shape[0] < dense_width or \
        pruned['params']['upconv1.weight'].shape[0] < _load(models / 'net_g_1.pth')['params']['upconv1.weight'].shape[0]


def _logged_lrs(log: str) -> dict[int, list[float]]:
    out = {}
    for m in re.finditer(r'iter:\s*([\d,]+), lr:\(([^)]*)\)', log):
        out[int(m.group(1).replace(',', ''))] = [float(v) for v in m.group(2).split(',') if v]
    return out


def cosine_lrs(steps: int, period: int) -> list[float]:
    """CosineAnnealingRestartLR after ``steps`` steps, for the main and the flow (spynet) parameter group."""
    w = 0.5 * (1 + math.cos(math.pi * steps / period))
    return [ETA_MIN + (LR0 - ETA_MIN) * w, ETA_MIN + (LR0 * FLOW_MUL - ETA_MIN) * w]


def test_learning_rate_is_constant_in_sparsity_then_cosine(straight):
    """``scheduler_starts_at_finetune``: the paper's constant LR for the sparsity stage, then a fresh cosine schedule
    for finetuning; the flow group keeps its multiplier after the optimizer is rebuilt."""
    lrs = _logged_lrs(straight.log)
    assert sorted(lrs) == list(range(1, TOTAL + 1))
    period = straight.opt['train']['scheduler']['periods'][0]
    for it, groups in lrs.items():
        expect = cosine_lrs(max(it - PRUNE_AT - 1, 0), period)
        assert groups == pytest.approx(expect, rel=2e-3), f'iter {it}'


def test_fix_flow_and_flow_group_survive_pruning(straight):
    models = straight.exp / 'models'

    def spynet(it):
        return {k: v for k, v in _load(models / f'net_g_{it}.pth')['params'].items() if k.startswith('spynet.')}

    frozen_a, frozen_b, trained, after_prune = spynet(1), spynet(FIX_FLOW - 1), spynet(FIX_FLOW), spynet(TOTAL)
    assert all(torch.equal(frozen_a[k], frozen_b[k]) for k in frozen_a)       # frozen while iter < fix_flow
    assert any(not torch.equal(frozen_b[k], trained[k]) for k in frozen_b)    # trained from iter fix_flow
    assert any(not torch.equal(trained[k], after_prune[k]) for k in trained)  # still optimised after the rebuild


def test_logs_stage_alpha_losses_and_gammas(straight):
    log = straight.log
    assert f'SSL: sparsity stage finished at iter {PRUNE_AT}' in log
    assert 'SSL: method ssl, global pruning ratio 0.5' not in log  # the selection report replaced that line
    assert 'SSL: selection (method ssl, scope global_normalized' in log and 'at pruning ratio 0.5' in log
    assert 'SSL:   forward_trunk.main.2.0.conv1 ' in log and 'MACs per clip' in log  # no clip size: params only
    assert (straight.cwd / 'experiments' / straight.opt['name'] / 'models' / 'ssl_selection.json').is_file()
    assert 'pruned layers keep a unit count that is not a multiple of 8' in log  # tiny widths: width advice
    for word in ('l_sir:', 'ssl_alpha:', 'ssl_gamma_pruned:', 'ssl_gamma_kept:', 'l_tf:',
                 'ssl_gamma_pruned/forward_trunk.main.2.0.conv1:'):
        assert word in log, word
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(straight.cwd / 'tb_logger' / straight.opt['name'])).Reload()
    tags = set(events.Tags()['scalars'])
    assert {'losses/l_sir', 'losses/l_tf', 'ssl_alpha', 'ssl_stage', 'ssl_gamma_pruned',
            'ssl_gamma_kept/upconv1'} <= tags
    stage = [e.value for e in events.Scalars('ssl_stage')]
    assert stage[:PRUNE_AT - 1] == [0.0] * (PRUNE_AT - 1) and stage[-1] == 1.0
    alpha = [e.value for e in events.Scalars('ssl_alpha')]
    assert alpha[0] == pytest.approx(0.05) and alpha[-1] == pytest.approx(0.1)


def _killed_copy(run, cwd: Path, resume_at: int) -> Path:
    """A copy of ``run``'s experiment in ``cwd`` as if it had been killed right after saving iteration resume_at."""
    exp = _exp(cwd, run.opt['name'])
    shutil.copytree(run.exp, exp)
    for path in list((exp / 'models').iterdir()) + list((exp / 'training_states').iterdir()):
        it = path.stem.split('_')[-1]
        if not it.isdigit() or int(it) > resume_at:
            path.unlink()
    for log in exp.glob('train_*.log'):
        log.unlink()
    return exp


@pytest.mark.parametrize('resume_at', [2, 5], ids=['sparsity-stage', 'finetune-stage'])
def test_auto_resume_continues_as_if_never_stopped(straight, tmp_path, resume_at):
    exp = _killed_copy(straight, tmp_path, resume_at)
    run_entry(TRAIN, straight.yml, tmp_path, '--auto_resume')
    log = _log_text(exp)
    assert 'Resuming training from epoch' in log and f'iter: {resume_at}.' in log
    want, got = _load(straight.exp / 'models' / f'net_g_{TOTAL}.pth'), _load(exp / 'models' / f'net_g_{TOTAL}.pth')
    assert got['ssl_spec'] == want['ssl_spec']
    for key in ('params', 'params_ema'):
        assert got[key].keys() == want[key].keys()
        for name in want[key]:
            torch.testing.assert_close(got[key][name], want[key][name], rtol=1e-5, atol=1e-6, msg=name)
    assert _logged_lrs(log) == {k: v for k, v in _logged_lrs(straight.log).items() if k > resume_at}


def _psnrs(text: str) -> list[float]:
    return [float(v) for v in re.findall(r'# psnr: ([\d.]+)', text)]


def test_test_entry_point_rebuilds_pruned_checkpoint(straight, tiny_data, tmp_path):
    opt = fast_options(tiny_data, 'eval_pruned')
    test_opt = {
        'name': 'eval_pruned', 'model_type': 'SSLVideoRecurrentModel', 'scale': opt['scale'], 'num_gpu': 0,
        'manual_seed': 0, 'datasets': {'test_1': opt['datasets']['val']}, 'network_g': opt['network_g'],
        'path': {'pretrain_network_g': str(straight.exp / 'models' / 'net_g_latest.pth'), 'strict_load_g': True},
        'val': {'save_img': False, 'suffix': None, 'metrics': opt['val']['metrics']},
    }
    proc = run_entry(TEST, write_options(tmp_path, test_opt), tmp_path)
    log = '\n'.join(p.read_text() for p in (tmp_path / 'results' / 'eval_pruned').glob('test_*.log'))
    assert '(pruned)' in log
    # Same network, same clip: the evaluation reproduces the training run's final validation.
    assert _psnrs(log)[-1] == pytest.approx(_psnrs(straight.log)[-1], abs=1e-4), proc.stderr[-2000:]


def test_l1_method_prunes_at_start_without_sir(tiny_data, tmp_path):
    """Also BasicSR's --debug (name prefix, print every iteration) and --force_yml (total_iter 6 -> 2) flags."""
    opt = _opt(tiny_data, 'l1_run', ssl__method='l1', train__total_iter=6, val=...)
    run_entry(TRAIN, write_options(tmp_path, opt), tmp_path, '--debug', '--force_yml', 'train:total_iter=2')
    exp = _exp(tmp_path, 'debug_l1_run')
    log = _log_text(exp)
    assert 'SSL: selection (method l1, ' in log and 'l_sir' not in log and 'l_tf:' in log
    assert sorted(_logged_lrs(log)) == [1, 2]
    assert 'ssl_spec' in _load(exp / 'models' / 'net_g_latest.pth')


GAMMA_MUL = 10.0


@pytest.fixture(scope='module')
def gamma_lr(tiny_data, tmp_path_factory):
    cwd = tmp_path_factory.mktemp('gamma_lr')
    opt = _opt(tiny_data, 'ssl_gamma_lr', train__ssl_gamma_lr_mul=GAMMA_MUL, val=...)
    yml = write_options(cwd, opt)
    run_entry(TRAIN, yml, cwd)
    exp = _exp(cwd, opt['name'])
    return SimpleNamespace(cwd=cwd, opt=opt, yml=yml, exp=exp, log=_log_text(exp))


def test_gamma_group_has_its_own_learning_rate_until_pruning(gamma_lr):
    """``train.ssl_gamma_lr_mul``: during the sparsity stage the γ are a third group at lr x mul; pruning removes the
    group and the main and flow groups continue their schedule as without it."""
    lrs = _logged_lrs(gamma_lr.log)
    period = gamma_lr.opt['train']['scheduler']['periods'][0]
    for it, groups in lrs.items():
        expect = cosine_lrs(max(it - PRUNE_AT - 1, 0), period)
        if it < PRUNE_AT:   # the log of iteration PRUNE_AT comes after its pruning
            expect = expect + [LR0 * GAMMA_MUL]
        assert groups == pytest.approx(expect, rel=2e-3), f'iter {it}'
    state = _load(gamma_lr.exp / 'training_states' / '2.state')
    groups = state['optimizers'][0]['param_groups']
    assert len(groups) == 3 and groups[2]['lr'] == pytest.approx(LR0 * GAMMA_MUL)
    n_gammas = sum(k.endswith(('.ssl_gamma', '.ssl_gamma_in')) for k in _load(gamma_lr.exp / 'models' /
                                                                              'net_g_2.pth')['params'])
    assert len(groups[2]['params']) == n_gammas > 0
    assert len(_load(gamma_lr.exp / 'training_states' / f'{TOTAL}.state')['optimizers'][0]['param_groups']) == 2


def test_gamma_group_resumes_in_the_sparsity_stage(gamma_lr, tmp_path):
    exp = _killed_copy(gamma_lr, tmp_path, 2)
    run_entry(TRAIN, gamma_lr.yml, tmp_path, '--auto_resume')
    want, got = _load(gamma_lr.exp / 'models' / f'net_g_{TOTAL}.pth'), _load(exp / 'models' / f'net_g_{TOTAL}.pth')
    for name in want['params']:
        torch.testing.assert_close(got['params'][name], want['params'][name], rtol=1e-5, atol=1e-6, msg=name)
    assert _logged_lrs(_log_text(exp)) == {k: v for k, v in _logged_lrs(gamma_lr.log).items() if k > 2}


def test_bad_gamma_lr_mul_is_refused(tiny_data, tmp_path):
    opt = _opt(tiny_data, 'bad_gamma_lr', train__ssl_gamma_lr_mul=0, val=...)
    proc = run_entry(TRAIN, write_options(tmp_path, opt), tmp_path, check=False)
    assert proc.returncode != 0 and 'train.ssl_gamma_lr_mul must be a positive number' in proc.stderr
