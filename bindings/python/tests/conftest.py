import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
# The package and the test helpers import without installation.
for _p in (str(_TESTS.parent), str(_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from support import GOLDEN_CASES, need_shared  # noqa: E402


@pytest.fixture(params=sorted(GOLDEN_CASES))
def golden_case(request):
    """(case name, folder, k, width, arch, teacher path) of each golden case."""
    name = request.param
    k, width, arch, teacher = GOLDEN_CASES[name]
    folder = need_shared("golden", name)
    return name, folder, k, width, arch, folder / teacher


@pytest.fixture(scope="session")
def converted_golden(tmp_path_factory):
    """A function: golden case name -> its converted model file (made once)."""
    from pkgnet import convert

    cache = {}

    def get(name):
        if name not in cache:
            k, width, arch, teacher = GOLDEN_CASES[name]
            folder = need_shared("golden", name)
            out = tmp_path_factory.mktemp("golden") / (name + ".safetensors")
            convert.convert(folder / "student.pt", folder / teacher, arch, k, "pred", out)
            cache[name] = out
        return cache[name]

    return get
