"""Loading the scripts in examples/ as modules, for the tests that run them."""

import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    """Import ``examples/{name}.py`` (not a package) and return the module.

    The module is registered in ``sys.modules``: Numba's disk cache of an example's
    ``cache=True`` functions finds their module by name when it loads them.
    """
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
