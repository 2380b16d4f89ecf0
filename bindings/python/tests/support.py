"""Locations of the shared test data and the golden cases."""

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
BINDINGS = TESTS.parent
REPO = TESTS.parents[2]

GOLDEN_CASES = {
    # case -> (k, width, teacher arch, teacher file)
    "k2_w16_resnet18": (2, 16, "resnet18", "resnet18.pth"),
    "k1_w16_resnet18": (1, 16, "resnet18", "resnet18.pth"),
    "k2_w64_resnext50": (2, 64, "resnext50_32x4d", "resnext50_32x4d.pth"),
}


def shared_dir():
    """$PKGNET_SHARED_DIR, else the folder 'shared' beside the repo root
    (CI clones the repo anywhere with shared/ next to it)."""
    env = os.environ.get("PKGNET_SHARED_DIR")
    return Path(env).resolve() if env else (REPO.parent / "shared").resolve()


def need_shared(*parts):
    """A path under the shared folder; skips the calling test when absent."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip("shared data not found: %s (expected the 'shared' folder beside the repo "
                    "root, or set PKGNET_SHARED_DIR)" % path)
    return path


def require_library():
    """The library's version; skips (locally) or fails (in CI) when
    libpkgnet.so is not built."""
    import pkgnet
    try:
        return pkgnet.version()
    except pkgnet.BackendError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"libpkgnet is required in CI: {exc}")
        pytest.skip(f"libpkgnet not available (run `make build`): {exc}")
