"""plot_hidden_states on a real tiny run: per-step hidden-state statistics of the unpruned teacher and of the pruned
checkpoints (before / after finetuning), checked against hidden states captured independently with plain hooks."""
import csv
import math

import matplotlib.image as mpimg
import pytest
import torch
from tools_helpers import FINETUNE, FRAMES, SPARSITY

from ssl_plugin.tools import plot_hidden_states as phs

LABELS = ['pruned, before finetuning', 'after finetuning']


def _rows(path):
    with open(path) as f:
        return [{k: (v if k in ('network', 'direction') else float(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]


@pytest.fixture(scope='module')
def result(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp('hs')
    models = tiny_run.exp / 'models'
    return phs.main(['--opt', str(tiny_run.yml), '--ckpt', str(models / f'net_g_{SPARSITY}.pth'),
                     str(models / 'net_g_latest.pth'), '--labels', *LABELS, '--out', str(out)])


def _hidden(net, lq):
    """Trunk outputs per direction, captured with plain forward hooks (not the engine's recorder)."""
    seen = {'forward': [], 'backward': []}
    handles = [net.get_submodule(f'{d}_trunk').register_forward_hook(
        lambda m, a, out, d=d: seen[d].append(out.detach().clone())) for d in seen]
    with torch.no_grad():
        net.eval()(lq)
    for h in handles:
        h.remove()
    return seen


def test_rows_cover_every_network_direction_and_step(result, tiny_run):
    rows = _rows(result['csv'])
    assert result['teacher'].endswith(f'{SPARSITY + FINETUNE}.state')  # newest training state holding the teacher
    assert result['clip'] == str(tiny_run.lq)  # the validation clip of the options
    networks = list(dict.fromkeys(r['network'] for r in rows))
    assert networks[1:] == LABELS and networks[0].startswith('unpruned')
    for network in networks:
        for direction in ('forward', 'backward'):
            sel = [r for r in rows if r['network'] == network and r['direction'] == direction]
            assert [r['step'] for r in sel] == list(range(FRAMES))
            frames = [r['frame'] for r in sel]
            assert frames == (list(range(FRAMES)) if direction == 'forward' else list(range(FRAMES))[::-1])
    for r in rows:
        if r['network'] == networks[0]:
            assert r['error_l1'] == 0 and r['relative_error'] == 0
        else:
            assert r['error_l1'] > 0 and math.isfinite(r['relative_error'])


def test_numbers_match_independently_captured_hidden_states(result, tiny_run):
    from basicsr.archs import build_network

    from ssl_plugin.basicsr_plugin import load_pruned_network

    rows = _rows(result['csv'])
    lq = phs.read_clip(tiny_run.lq, None)
    teacher = build_network(tiny_run.opt['network_g'])
    state = torch.load(result['teacher'], map_location='cpu', weights_only=True)
    teacher.load_state_dict(state['ssl']['teacher_state'])
    pruned = load_pruned_network(build_network(tiny_run.opt['network_g']),
                                 str(tiny_run.exp / 'models' / f'net_g_{SPARSITY}.pth'))
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in teacher.parameters())
    refs, gots = _hidden(teacher, lq), _hidden(pruned, lq)
    for direction in ('forward', 'backward'):
        ref, got = refs[direction], gots[direction]
        for step in (0, FRAMES - 1):
            row = next(r for r in rows if r['network'] == LABELS[0] and r['direction'] == direction
                       and r['step'] == step)
            assert row['error_l1'] == pytest.approx(float((got[step] - ref[step]).abs().mean()), rel=1e-5)
            assert row['mean_hidden'] == pytest.approx(float(got[step].mean()), rel=1e-5, abs=1e-7)
            base = next(r for r in rows if r['network'].startswith('unpruned') and r['direction'] == direction
                        and r['step'] == step)
            assert base['mean_abs_hidden'] == pytest.approx(float(ref[step].abs().mean()), rel=1e-5)


def test_png(result):
    png = result['png']
    assert png.is_file() and png.stat().st_size > 20_000
    img = mpimg.imread(png)
    assert img.shape[0] >= 500 and img.shape[1] >= 800 and img[..., :3].std() > 0.05


def test_clear_errors(tiny_run, tmp_path):
    models = tiny_run.exp / 'models'
    ckpt = str(models / 'net_g_latest.pth')
    with pytest.raises(ValueError, match='holds no unpruned teacher'):  # a sparsity-stage state
        phs.main(['--opt', str(tiny_run.yml), '--ckpt', ckpt, '--teacher',
                  str(tiny_run.exp / 'training_states' / '1.state'), '--out', str(tmp_path)])
    with pytest.raises(ValueError, match='2 labels for 1 checkpoints'):
        phs.main(['--opt', str(tiny_run.yml), '--ckpt', ckpt, '--labels', 'a', 'b', '--out', str(tmp_path)])
    with pytest.raises(FileNotFoundError, match='--ckpt .*missing.pth does not exist'):
        phs.main(['--opt', str(tiny_run.yml), '--ckpt', str(tmp_path / 'missing.pth')])
    lonely = tmp_path / 'elsewhere' / 'models'
    lonely.mkdir(parents=True)
    (lonely / 'net_g_1.pth').write_bytes((models / 'net_g_latest.pth').read_bytes())
    with pytest.raises(FileNotFoundError, match='give --teacher'):
        phs.main(['--opt', str(tiny_run.yml), '--ckpt', str(lonely / 'net_g_1.pth'), '--out', str(tmp_path)])
