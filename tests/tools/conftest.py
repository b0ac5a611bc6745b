"""Fixtures of the plotting-tool tests (helpers live in tools_helpers.py)."""
import pytest
from tools_helpers import train_tiny_run


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    """One tiny real SSL run (sparsity stage, prune, finetuning with TF) shared by the tests."""
    return train_tiny_run(tmp_path_factory.mktemp('tiny_run'))
