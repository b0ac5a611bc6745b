"""benchmarks/quality.py: the runs it plans on a dense teacher (methods, seeds, TF teacher, resume) and the per-method
summary over seeds (no training here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

import ssl_plugin  # noqa: F401  (host compatibility shims)

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks'


@pytest.fixture(scope='module')
def q():
    sys.path.insert(0, str(BENCH))
    try:
        import quality
        yield quality
    finally:
        sys.path.remove(str(BENCH))


def planned(q, tmp_path, *extra, target=None):
    teacher = tmp_path / 'dense.pth'
    if not teacher.exists():  # a real (untrained) dense teacher: plan resolves every selection on it
        import torch
        from basicsr.archs import build_network
        torch.manual_seed(0)
        net = build_network({'type': 'BasicVSRUni', 'num_feat': 8, 'num_block': 1})
        torch.save({'params': net.state_dict()}, teacher)
    (tmp_path / 'meta.txt').write_text('a 10 (64,64,3)\n')
    args = q.parse_args(['--pretrained', str(teacher), '--data-gt', str(tmp_path / 'gt'), '--data-lq',
                         str(tmp_path / 'lq'), '--meta-info', str(tmp_path / 'meta.txt'), '--num-feat', '8',
                         '--num-block', '1', '--dense-iters', '20', *extra])
    work = tmp_path / 'work'
    a, gt, lq, meta, ckpt, _ = q.resolve(args, 'uni', work)
    a.lite_feat = 4
    q.settle(a)
    a.params_target = target or a.params_target
    runs, specs = q.plan(a, work, gt, lq, meta, ckpt)
    opts = {r.name: yaml.safe_load(r.yml.read_text()) for r in runs}
    return a, runs, specs, opts, teacher


def test_plan_every_method_and_seed(q, tmp_path):
    a, runs, specs, opts, teacher = planned(q, tmp_path, '--seeds', '3', '7', '--finetune-iters', '12',
                                            '--stabilize-iters', '4', '--budget', 'ratio', '--aligned-ratio', '0.3')
    names = [r.name for r in runs]
    assert names[0] == 'lite'  # the longest run starts first
    assert set(names) == {'lite', 'ssl', 'ssl_no_tf', 'ssl_keep_conv2', 'ssl_tf_dense', 'ssl_global', 'l1', 'l1_long',
                          'aligned', 'ssl_s7', 'l1_s7', 'l1_long_s7', 'aligned_s7'}
    stage = q.sparsity_iters(a)
    for name, o in opts.items():
        assert o['network_g']['type'] == 'BasicVSRUni'
        if name == 'lite':
            assert o['network_g']['num_feat'] == 4 and o['train']['total_iter'] == 20 + 12
            assert o['model_type'] == 'VideoRecurrentModel'
            continue
        assert o['path']['pretrain_network_g'] == str(teacher)
        assert o['manual_seed'] == (7 if name.endswith('_s7') else 3)
        method = o['ssl']['method']
        assert method == {'l1': 'l1', 'l1_long': 'l1', 'aligned': 'aligned'}.get(name.split('_s')[0], 'ssl')
        assert o['ssl']['pruning_ratio'] == (0.3 if method == 'aligned' else 0.5)
        # every run but plain l1 trains stage + 12 iterations after the teacher (l1_long: all of them finetuning)
        assert o['train']['total_iter'] == (12 if name.split('_s')[0] == 'l1' else stage + 12)
        finetune = stage + 12 if name.startswith('l1_long') else 12
        assert o['train']['scheduler']['periods'] == [finetune]
        assert (o['train']['tf_opt'] is None) == (name == 'ssl_no_tf')
        assert o['ssl'].get('tf_teacher') == (str(teacher) if name == 'ssl_tf_dense' else None)
        assert o['ssl']['skip'] == (['*.conv2'] if name == 'ssl_keep_conv2' else [])
        assert o['ssl']['scope'] == ('global' if name == 'ssl_global' else 'global_normalized')
    no_tf = next(r for r in runs if r.name == 'ssl_no_tf')
    assert no_tf.deps == {'ssl'}
    assert opts['ssl_no_tf']['path']['resume_state'].endswith(f'ssl_no_tf/training_states/{stage}.state')
    by_name = {s['name']: s for s in specs}
    assert by_name['dense']['ckpt'] == teacher and by_name['lite']['net']['num_feat'] == 4
    assert by_name['l1']['before'] == 'l1' and by_name['ssl_s7']['before'] is None
    assert by_name['l1_long']['before'] == 'l1' and opts['l1_long']['logger']['save_checkpoint_freq'] == stage + 12


def test_plan_subset_and_errors(q, tmp_path):
    _, runs, _, _, _ = planned(q, tmp_path, '--methods', 'l1', 'lite', '--seeds', '0', '1')
    assert [r.name for r in runs] == ['lite', 'l1', 'l1_s1']
    with pytest.raises(SystemExit, match='add ssl'):
        planned(q, tmp_path, '--methods', 'ssl_no_tf')
    with pytest.raises(SystemExit):
        q.parse_args(['--seeds', '1', '1'])
    with pytest.raises(SystemExit):
        q.parse_args(['--gamma-lr-mul', '0'])


def test_plan_gamma_lr_mul_reaches_the_pruning_runs_only(q, tmp_path):
    _, _, _, opts, _ = planned(q, tmp_path, '--methods', 'ssl', 'l1', 'lite', '--gamma-lr-mul', '20')
    assert opts['ssl']['train']['ssl_gamma_lr_mul'] == 20 and opts['l1']['train']['ssl_gamma_lr_mul'] == 20
    assert 'ssl_gamma_lr_mul' not in opts['lite']['train']  # a plain VideoRecurrentModel run has no γ
    _, _, _, default, _ = planned(q, tmp_path, '--methods', 'ssl')
    assert 'ssl_gamma_lr_mul' not in default['ssl']['train']


def test_summary_mean_and_spread_over_seeds(q):
    def row(method, seed, psnr):
        return {'method': method, 'seed': seed, 'psnr_rgb': psnr, 'ssim_rgb': 0.5, 'psnr_y': psnr + 1, 'ssim_y': 0.6,
                'params': seed}
    s = q.summarize({'ssl': row('ssl', 0, 30.0), 'ssl_s1': row('ssl', 1, 31.0), 'l1': row('l1', 0, 29.0)})
    assert s['ssl']['psnr_rgb'] == pytest.approx(30.5) and s['ssl']['psnr_rgb_spread'] == pytest.approx(1.0)
    assert s['ssl']['seeds'] == [0, 1] and s['ssl']['params'] == 0  # the cost of the first seed
    assert s['l1']['psnr_rgb_spread'] == 0 and s['l1']['psnr_y'] == pytest.approx(30.0)


def test_default_budget_matches_the_lite_params_and_resolves_each_selection(q, tmp_path):
    """Default ``--budget lite``: every pruned run targets dense / lite params without SPyNet; the plan resolves each
    selection on the teacher as the run will (chosen ratio, met target) and leaves out, naming why, a method whose
    settings cannot reach it, instead of failing the benchmark."""
    a, runs, specs, opts, _ = planned(q, tmp_path, '--finetune-iters', '12', '--stabilize-iters', '4')
    assert a.params_target > 1
    by_name = {s['name']: s for s in specs}
    for name, o in opts.items():
        if name == 'lite':
            continue
        assert 'pruning_ratio' not in o['ssl']
        assert o['ssl']['target_params_ratio'] == a.params_target and o['ssl']['budget_exclude'] == ['spynet']
        if name != 'ssl_no_tf':  # resumes ssl: no selection of its own
            sel = by_name[name]['selection']
            assert 0 < sel['pruning_ratio'] < 1 and abs(sel['selected_param_ratio'] / a.params_target - 1) <= 0.02
    a2, runs2, *_ = planned(q, tmp_path, '--methods', 'ssl', 'l1', 'lite', target=50.0)
    assert [r.name for r in runs2] == ['lite'] and set(a2.left_out) == {'ssl', 'l1'}
    assert 'target_params_ratio = 50.0: unreachable' in a2.left_out['l1']


def test_markdown_names_l1_long_budget_only_when_it_ran(q):
    results = BENCH.parent / 'docs' / 'results'
    full = json.loads((results / 'quality_bi.json').read_text())
    assert q.markdown(full) == (results / 'quality_bi.md').read_text()  # the committed table is the JSON's
    assert 'l1_long 200; lr' in q.markdown(full)
    no_l1 = json.loads((results / 'quality_gamma20' / 'quality_bi.json').read_text())
    text = q.markdown(no_l1)
    assert 'l1_long' not in text and '(lr 0.0005, γ lr x 20)' in text
