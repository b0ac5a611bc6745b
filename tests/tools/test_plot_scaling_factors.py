"""plot_scaling_factors on a real tiny run: the plotted numbers are the γ the run's checkpoints hold, pruned units'
γ fall below the kept ones' under the penalty, the log file and tensorboard give the same series, MMagic's
scalars.json is read too, and a run without per-layer γ gets an error naming the option."""
import csv
import json
import re
import shutil

import matplotlib.image as mpimg
import pytest
import torch
from tools_helpers import SPARSITY

from ssl_plugin.tools import plot_scaling_factors as psf

DEFAULT_LAYERS = ['backward_trunk.main.2.1.conv1', 'backward_trunk.main.2.1.conv2', 'forward_trunk.main.2.1.conv1',
                  'forward_trunk.main.2.1.conv2', 'upconv1', 'upconv2']


def _rows(path):
    with open(path) as f:
        return [{k: (v if k == 'layer' else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def _check_png(path, min_px=300):
    assert path.is_file() and path.stat().st_size > 10_000, path
    img = mpimg.imread(path)
    assert img.shape[0] >= min_px and img.shape[1] >= min_px
    assert img[..., :3].std() > 0.05  # not a blank canvas


@pytest.fixture(scope='module')
def plotted(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp('sf')
    result = psf.main([str(tiny_run.exp), '--out', str(out)])
    return result, _rows(result['csv'])


def test_default_layers_one_png_each(plotted):
    result, rows = plotted
    assert list(result['layers']) == DEFAULT_LAYERS  # middle block (index 1 of 0..2) per branch + both upconvs
    for path in [*result['layers'].values(), result['overview']]:
        _check_png(path)
    assert {r['layer'] for r in rows} == set(DEFAULT_LAYERS)


def test_plotted_values_are_the_checkpoints_gammas(plotted, tiny_run):
    """Each logged mean |γ| equals the one computed from that iteration's checkpoint and the run's S."""
    _, rows = plotted
    pruned = torch.load(tiny_run.exp / 'training_states' / '1.state', weights_only=True)['ssl']['pruned']
    iters = sorted({int(r['iter']) for r in rows})
    assert iters == list(range(1, SPARSITY))  # every sparsity-stage iteration; none after the prune
    for it in (1, SPARSITY - 1):
        params = torch.load(tiny_run.exp / 'models' / f'net_g_{it}.pth', weights_only=True)['params']
        for key in DEFAULT_LAYERS:
            gamma = params[f'{key}.ssl_gamma'].abs()
            mask = torch.zeros(gamma.numel(), dtype=torch.bool)
            mask[pruned[key]] = True
            row = next(r for r in rows if r['layer'] == key and r['iter'] == it)
            assert row['gamma_pruned'] == pytest.approx(float(gamma[mask].mean()), abs=1e-6)
            assert row['gamma_kept'] == pytest.approx(float(gamma[~mask].mean()), abs=1e-6)
            assert row['alpha'] == pytest.approx(0.1)


def test_pruned_gammas_fall_below_kept(plotted):
    _, rows = plotted
    for key in DEFAULT_LAYERS:
        series = sorted((r for r in rows if r['layer'] == key), key=lambda r: r['iter'])
        first, last = series[0], series[-1]
        assert last['gamma_pruned'] < first['gamma_pruned'] - 0.01, key
        assert last['gamma_pruned'] < last['gamma_kept'] - 0.005, key


def test_log_file_gives_the_same_series_as_tensorboard(tiny_run, tmp_path):
    exp = tmp_path / 'experiments' / tiny_run.exp.name  # no tb_logger next to it: the log file is read
    shutil.copytree(tiny_run.exp, exp)
    series, where = psf.read_run(exp)
    assert 'log' in where
    tb = psf.read_tensorboard(tiny_run.tb)
    assert set(series) == set(tb)
    for name, values in tb.items():
        assert set(series[name]) == set(values)
        for step, v in values.items():
            assert series[name][step] == pytest.approx(v, rel=1e-4), (name, step)  # printed with 5 digits


def test_layer_globs_and_bad_glob(tiny_run, tmp_path):
    result = psf.main([str(tiny_run.exp), '--layers', 'upconv*', '*.0.conv1@in', '--out', str(tmp_path)])
    assert list(result['layers']) == ['upconv1', 'upconv2', 'backward_trunk.main.2.0.conv1@in',
                                      'forward_trunk.main.2.0.conv1@in']
    with pytest.raises(ValueError, match="'nothing_\\*' matches none"):
        psf.main([str(tiny_run.exp), '--layers', 'nothing_*', '--out', str(tmp_path)])


def test_run_without_per_layer_gammas_names_the_option(tiny_run, tmp_path):
    exp = tmp_path / 'experiments' / 'no_per_layer'
    exp.mkdir(parents=True)
    for log in tiny_run.exp.glob('train_*.log'):  # the same run as if logger.ssl_per_layer were off
        text = re.sub(r' ssl_gamma_(pruned|kept)/\S+: \S+', '', log.read_text())
        (exp / log.name).write_text(text)
    with pytest.raises(psf.NoScalingFactors, match='ssl_per_layer: true'):
        psf.main([str(exp), '--out', str(tmp_path / 'out')])
    with pytest.raises(FileNotFoundError, match='no tensorboard events'):
        psf.main([str(tmp_path), '--out', str(tmp_path / 'out')])


def test_mmengine_work_dir(tmp_path):
    """The lines mmengine's visualizer writes for SSLPruningHook (per-key γ) and the LoggerHook (α), MMagic naming."""
    keys = [f'{d}_resblocks.main.2.{i}.{c}' for d in ('backward', 'forward') for i in range(4) for c in
            ('conv1', 'conv2')] + ['upsample1.upsample_conv', 'upsample2.upsample_conv', 'conv_hr']
    lines = []
    for step in range(1, 6):
        lines.append({**{f'ssl/gamma_pruned/{k}': 1 - 0.1 * step for k in keys if k != 'upsample1.upsample_conv'},
                      **{f'ssl/gamma_kept/{k}': 1 + 0.01 * step for k in keys}, 'step': step})
        lines.append({'lr': 1e-4, 'ssl/alpha': min(0.05 * step, 0.1), 'loss': 0.1, 'iter': step, 'step': step})
    run = tmp_path / 'work_dir' / '20240101_000000' / 'vis_data'
    run.mkdir(parents=True)
    (run / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    result = psf.main([str(tmp_path / 'work_dir'), '--out', str(tmp_path / 'out')])
    assert list(result['layers']) == ['backward_resblocks.main.2.2.conv1', 'backward_resblocks.main.2.2.conv2',
                                      'forward_resblocks.main.2.2.conv1', 'forward_resblocks.main.2.2.conv2',
                                      'upsample1.upsample_conv', 'upsample2.upsample_conv']
    rows = _rows(result['csv'])
    up1 = [r for r in rows if r['layer'] == 'upsample1.upsample_conv']
    assert len(up1) == 5 and all(r['gamma_pruned'] != r['gamma_pruned'] for r in up1)  # NaN: nothing pruned there
    last = next(r for r in rows if r['layer'] == 'upsample2.upsample_conv' and r['iter'] == 5)
    assert (last['alpha'], last['gamma_pruned'], last['gamma_kept']) == pytest.approx((0.1, 0.5, 1.05))
