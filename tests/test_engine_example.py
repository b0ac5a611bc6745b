"""The README's "Using the engine directly" example runs, sparsifies S and rebuilds the pruned network exactly."""
import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / 'examples' / 'engine_direct.py'


def test_engine_example_runs_and_sparsifies(tmp_path):
    spec = importlib.util.spec_from_file_location('engine_direct', EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(['--iters', '2', '--out', str(tmp_path)])
    assert result['gamma_pruned'] < result['gamma_kept'] - 0.2  # SIR drove the γ of S down, not the others
    assert result['units_in_S'] > 0
    assert result['params'][1] < result['params'][0]
    assert result['rebuilt_max_diff'] == 0.0
    assert (tmp_path / 'spec.json').is_file() and (tmp_path / 'pruned.pth').is_file()


def test_readme_shows_the_example():
    readme = (EXAMPLE.parents[1] / 'README.md').read_text()
    assert 'examples/engine_direct.py' in readme and 'ctrl.clip_losses(net, x)' in readme
