"""Load a repository script (a benchmark, an example) as a module, so tests call its functions directly."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str):
    """The script at ``REPO / relative``, executed as module ``name`` (not registered in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
