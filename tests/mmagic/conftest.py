"""Fixtures of the MMagic integration tests (helpers live in mm_helpers.py)."""
import pytest
from mm_helpers import make_clip_data


@pytest.fixture(scope='session')
def clip_data(tmp_path_factory):
    """Frame folders cut from the real carphone clip (train clip 001, validation clip 000)."""
    return make_clip_data(tmp_path_factory.mktemp('mmagic_data'))
