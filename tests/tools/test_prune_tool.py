"""The dry-run tool (python -m ssl_plugin.tools.prune) on tiny networks: the JSON report agrees with the network it
saves (FLOP counter on the rebuilt checkpoint), the plot is written, MMagic configs work, bad input is an error."""
import json

import pytest
import torch
import yaml

import ssl_plugin  # noqa: F401
from ssl_plugin.basicsr_plugin import load_pruned_network, register
from ssl_plugin.core import count_macs, count_params, describe
from ssl_plugin.core.selection import example_clip
from ssl_plugin.tools import prune as tool

register()
from basicsr.archs import build_network  # noqa: E402

NET = {'type': 'BasicVSR', 'num_feat': 8, 'num_block': 1}
FRAMES, GT = 2, 144  # LR 36 px


@pytest.fixture(scope='module')
def dense(tmp_path_factory):
    root = tmp_path_factory.mktemp('prune_tool')
    torch.manual_seed(0)
    net = build_network(dict(NET))
    path = root / 'dense.pth'
    torch.save({'params': net.state_dict()}, path)
    return root, path


def _options(root, ckpt, **ssl):
    opt = {'name': 'dry', 'model_type': 'SSLVideoRecurrentModel', 'scale': 4, 'network_g': dict(NET),
           'path': {'pretrain_network_g': str(ckpt) if ckpt else None},
           'datasets': {'train': {'num_frame': FRAMES, 'gt_size': GT}},
           'ssl': {'method': 'l1', 'scope': 'global_normalized', 'pruning_ratio': 0.5, **ssl}}
    path = root / f'opt_{len(list(root.iterdir()))}.yml'
    path.write_text(yaml.safe_dump(opt))
    return path


def test_dry_run_report_json_png_and_the_saved_network_agree(dense, capsys):
    root, ckpt = dense
    opt = _options(root, ckpt, max_layer_ratio=0.75)
    out = root / 'sel.json'
    report = tool.main(['--opt', str(opt), '--json', str(out), '--png', str(root / 'sel.png'),
                        '--save', str(root / 'pruned.pth')])
    printed = capsys.readouterr().out
    assert 'MAC ratio x' in printed and 'fusion' in printed and 'spynet' in printed
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert {'layers', 'macs_dense', 'macs_pruned', 'params_dense', 'params_pruned', 'parts'} <= set(saved)
    assert all(set(v) >= {'units', 'pruned'} and v['pruned'] <= 0.75 * v['units'] for v in saved['layers'].values())
    assert saved['size'] == [FRAMES, GT // 4, GT // 4]
    assert (root / 'sel.png').stat().st_size > 1000
    # The saved checkpoint is what the report describes (BasicSR rebuilds it from its spec, strictly).
    net = load_pruned_network(build_network(dict(NET)), str(root / 'pruned.pth'))
    x = example_clip(net, describe(build_network(dict(NET))), saved['size'])
    assert count_macs(net, x) == saved['macs_pruned'] and count_params(net) == saved['params_pruned']
    dense_net = build_network(dict(NET))
    assert count_macs(dense_net, x) == saved['macs_dense']


def test_dry_run_with_a_budget_target(dense):
    root, ckpt = dense
    report = tool.main(['--opt', str(_options(root, ckpt, pruning_ratio=None, target_mac_ratio=1.5))])
    assert abs(report['mac_ratio'] / 1.5 - 1) <= 0.02 and 0 < report['pruning_ratio'] < 1


def test_dry_run_of_an_mmagic_config(tmp_path):
    from mmagic.models.editors.basicvsr.basicvsr_net import BasicVSRNet

    torch.manual_seed(0)
    gen = BasicVSRNet(mid_channels=8, num_blocks=1)
    ckpt = tmp_path / 'dense.pth'
    torch.save({'state_dict': {f'generator.{k}': v for k, v in gen.state_dict().items()}}, ckpt)
    cfg = tmp_path / 'user.py'
    base = tool.Path(tool.__file__).resolve().parents[2] / 'options' / 'mmagic' / 'ssl_basicvsr_demo.py'
    cfg.write_text(f'_base_ = {str(base)!r}\nmodel = dict(generator=dict(mid_channels=8, num_blocks=1), '
                   "ssl=dict(scope='local', pruning_ratio=0.5, align=1))\n")
    report = tool.main(['--config', str(cfg), '--ckpt', str(ckpt), '--json', str(tmp_path / 's.json')])
    assert report['layers']['fusion'] == {'units': 8, 'pruned': 4, 'kept': 4}
    assert {'backward_resblocks', 'forward_resblocks', 'reconstruction', 'spynet'} <= set(report['parts'])
    assert report['macs_pruned'] < report['macs_dense']


@pytest.mark.parametrize('ssl, args, match', [
    ({'method': 'ssl'}, ['--save', 'x.pth'], r'--save writes the one-shot L1-pruned network: set ssl\.method: l1'),
    ({'target_mac_ratio': 1.5}, [], r'ssl\.target_mac_ratio chooses the pruning ratio'),
    ({'pruning_ratio': None, 'target_mac_ratio': 40}, [], r'ssl\.target_mac_ratio = 40: unreachable.*can be'),
    ({'scope': 'globall'}, [], r'ssl\.scope must be one of'),
])
def test_dry_run_bad_input_is_an_error(dense, ssl, args, match):
    root, ckpt = dense
    with pytest.raises(ValueError, match=match):
        tool.main(['--opt', str(_options(root, ckpt, **ssl)), *args])


def test_dry_run_needs_a_dense_network(dense):
    root, _ = dense
    with pytest.raises(ValueError, match=r'no dense network to select on: set path\.pretrain_network_g'):
        tool.main(['--opt', str(_options(root, None))])
