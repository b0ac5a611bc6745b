"""The README's "Using the engine directly" example runs, sparsifies S and rebuilds the pruned network exactly."""
from script_module import REPO, load_script


def test_engine_example_runs_and_sparsifies(tmp_path):
    module = load_script('examples/engine_direct.py', 'engine_direct')
    result = module.main(['--iters', '2', '--out', str(tmp_path)])
    assert result['gamma_pruned'] < result['gamma_kept'] - 0.2  # SIR drove the γ of S down, not the others
    assert result['units_in_S'] > 0
    assert result['params'][1] < result['params'][0]
    assert result['rebuilt_max_diff'] == 0.0
    assert (tmp_path / 'spec.json').is_file() and (tmp_path / 'pruned.pth').is_file()


def test_readme_shows_the_example():
    readme = (REPO / 'README.md').read_text()
    assert 'examples/engine_direct.py' in readme and 'ctrl.clip_losses(net, x)' in readme
