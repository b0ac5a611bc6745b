"""Fixtures of the BasicSR integration tests (helpers live in bsr_helpers.py)."""
import pytest
from bsr_helpers import make_tiny_data


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """A REDS-like dataset: one 100-frame training clip and one short validation clip."""
    return make_tiny_data(tmp_path_factory.mktemp('data'))
