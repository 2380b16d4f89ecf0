"""The C API through C programs: examples/c/score_cubes.c against the numpy
reference, Tests/capi/test_capi.c (the header's contracts), and the installed
pkg-config file."""

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pkgnet
from pkgnet import synthetic
from reference import reference_scores

REPO = Path(__file__).resolve().parents[3]
INCLUDE = REPO / "include"
CC = os.environ.get("CC", "cc")
CFLAGS = ["-std=c11", "-O1", "-g", "-Wall", "-Wextra"]


@pytest.fixture(scope="module")
def libdir(tmp_path_factory):
    """A folder with libpkgnet.so and libpkgnet.so.0 (the SONAME programs ask
    for) pointing at the library the binding uses."""
    try:
        pkgnet.version()
    except pkgnet.BackendError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"libpkgnet is required in CI: {exc}")
        pytest.skip(f"libpkgnet not available (run `make build`): {exc}")
    if shutil.which(CC) is None:
        pytest.skip(f"no C compiler ({CC})")
    from pkgnet import _native

    real = Path(_native.lib()._name).resolve()
    folder = tmp_path_factory.mktemp("lib")
    for name in ("libpkgnet.so", "libpkgnet.so.0"):
        (folder / name).symlink_to(real)
    return folder


def compile_c(source, output, libdir):
    cmd = [CC, *CFLAGS, "-pthread", "-I", str(INCLUDE), str(source), "-o", str(output),
           "-L", str(libdir), "-lpkgnet", f"-Wl,-rpath,{libdir}", "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    return output


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def score_cubes_exe(libdir, tmp_path_factory):
    return compile_c(REPO / "examples" / "c" / "score_cubes.c", tmp_path_factory.mktemp("bin") / "score_cubes",
                     libdir)


@pytest.mark.parametrize("k,channels,task", [(2, 3, "pred"), (1, 1, "recon")])
def test_c_example_matches_reference(score_cubes_exe, tmp_path, k, channels, task):
    model = tmp_path / "model.safetensors"
    synthetic.random_model(model, k=k, width=16, arch="resnet18", task=task, channels=channels, seed=3)
    cubes = synthetic.random_cubes(7, channels=channels, seed=4)
    raw = tmp_path / "cubes.u8"
    cubes.tofile(raw)
    proc = run([score_cubes_exe, model, raw, 7])
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert len(rows) == 7 and all(len(r) == 3 + k for r in rows), proc.stdout
    got = np.array(rows, dtype=np.float64)
    assert np.array_equal(got[:, 0], np.arange(7))
    ref = reference_scores(model, cubes)
    np.testing.assert_allclose(got[:, 1], ref["prediction_error"], rtol=1e-5)
    np.testing.assert_allclose(got[:, 2:2 + k], ref["inconsistency"], rtol=1e-5)
    np.testing.assert_allclose(got[:, 2 + k], ref["combined"], rtol=1e-5)
    # %.9g round-trips float32: the printed values are the binding's, exactly.
    with pkgnet.Model(model) as m:
        s = m.score(cubes)
    assert np.array_equal(got[:, 1].astype(np.float32), s.prediction_error)
    assert np.array_equal(got[:, 2 + k].astype(np.float32), s.combined)


def test_c_example_errors(score_cubes_exe, tmp_path):
    model = tmp_path / "model.safetensors"
    synthetic.random_model(model, k=2, width=16, arch="resnet18", seed=5)
    raw = tmp_path / "cubes.u8"
    synthetic.random_cubes(2, seed=6).tofile(raw)

    proc = run([score_cubes_exe, tmp_path / "absent.safetensors", raw, 2])
    assert proc.returncode == 1 and "PKGNET_ERR_IO" in proc.stderr and proc.stdout == ""

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"garbage" * 50)
    proc = run([score_cubes_exe, garbage, raw, 2])
    assert proc.returncode == 1 and "PKGNET_ERR_FORMAT" in proc.stderr

    proc = run([score_cubes_exe, model, raw, 3])  # file holds 2 cubes
    assert proc.returncode == 1 and "expected exactly" in proc.stderr

    proc = run([score_cubes_exe, model, raw, "two"])
    assert proc.returncode == 1 and "N must be" in proc.stderr

    proc = run([score_cubes_exe, model])
    assert proc.returncode == 1 and "usage" in proc.stderr

    empty = tmp_path / "empty.u8"
    empty.write_bytes(b"")
    proc = run([score_cubes_exe, model, empty, 0])
    assert proc.returncode == 0 and proc.stdout == ""


@pytest.fixture(scope="module")
def test_capi_exe(libdir, tmp_path_factory):
    return compile_c(REPO / "Tests" / "capi" / "test_capi.c", tmp_path_factory.mktemp("bin") / "test_capi", libdir)


@pytest.mark.parametrize("k,channels,task", [(2, 3, "pred"), (1, 3, "pred"), (2, 1, "recon")])
def test_capi_contracts(test_capi_exe, tmp_path, k, channels, task):
    model = tmp_path / "model.safetensors"
    synthetic.random_model(model, k=k, width=16, arch="resnet18", task=task, channels=channels, seed=7)
    proc = run([test_capi_exe, model], env=dict(os.environ, TMPDIR=str(tmp_path)))
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0 and summary.endswith(" 0 failed"), proc.stdout + proc.stderr
    # No temporary files left behind by the garbage-file checks.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_install_and_pkg_config(libdir, tmp_path):
    """`make install` lays out a prefix that pkg-config users can build against."""
    if shutil.which("make") is None or shutil.which("pkg-config") is None:
        pytest.skip("make or pkg-config missing")
    if not (REPO / ".build" / "release" / "libpkgnet.so").exists():
        pytest.skip("no repository build to install")
    prefix = tmp_path / "prefix"
    proc = run(["make", "-C", REPO, "--no-print-directory", "install", f"PREFIX={prefix}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lib = prefix / "lib"
    assert (lib / "libpkgnet.so.0.1.0").is_file()
    assert os.readlink(lib / "libpkgnet.so.0") == "libpkgnet.so.0.1.0"
    assert os.readlink(lib / "libpkgnet.so") == "libpkgnet.so.0"
    assert (prefix / "include" / "pkgnet.h").read_bytes() == (INCLUDE / "pkgnet.h").read_bytes()

    env = dict(os.environ, PKG_CONFIG_PATH=str(lib / "pkgconfig"))
    flags = run(["pkg-config", "--cflags", "--libs", "pkgnet"], env=env)
    assert flags.returncode == 0, flags.stderr
    assert run(["pkg-config", "--modversion", "pkgnet"], env=env).stdout.strip() == "0.1.0"
    exe = tmp_path / "score_cubes"
    proc = run([CC, REPO / "examples" / "c" / "score_cubes.c", "-o", exe, *flags.stdout.split()])
    assert proc.returncode == 0, proc.stderr

    model = tmp_path / "model.safetensors"
    synthetic.random_model(model, k=1, width=16, arch="resnet18", seed=8)
    raw = tmp_path / "cubes.u8"
    synthetic.random_cubes(2, seed=9).tofile(raw)
    proc = run([exe, model, raw, 2], env=dict(os.environ, LD_LIBRARY_PATH=str(lib)))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    # The installed library carries no RUNPATH into the user's process.
    if shutil.which("readelf"):
        dyn = run(["readelf", "-d", lib / "libpkgnet.so.0.1.0"]).stdout
        assert "RUNPATH" not in dyn and "RPATH" not in dyn
        assert "Library soname: [libpkgnet.so.0]" in dyn


def test_ctypes_structures_match_the_header(tmp_path):
    """Sizes and offsets of the ctypes mirrors equal the C compiler's."""
    if shutil.which(CC) is None:
        pytest.skip(f"no C compiler ({CC})")
    from pkgnet import _native

    fields = {
        "pkgnet_model_info": (_native.ModelInfo, [f[0] for f in _native.ModelInfo._fields_]),
        "pkgnet_outputs": (_native.Outputs, [f[0] for f in _native.Outputs._fields_]),
    }
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <pkgnet.h>", "int main(void) {"]
    for struct, (_cls, names) in fields.items():
        lines.append(f'printf("{struct} sizeof %zu\\n", sizeof({struct}));')
        for name in names:
            lines.append(f'printf("{struct} {name} %zu\\n", offsetof({struct}, {name}));')
    macros = ["PKGNET_VERSION_MAJOR", "PKGNET_VERSION_MINOR", "PKGNET_VERSION_PATCH", "PKGNET_CROP_SIZE",
              "PKGNET_CUBE_FRAMES", "PKGNET_MAX_PAIRS"]
    for m in macros:
        lines.append(f'printf("macro {m} %d\\n", (int){m});')
    for status, name in _native.STATUS_NAMES.items():
        lines.append(f'printf("status {name} %d\\n", (int){name});')
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    proc = run([CC, "-std=c11", "-I", INCLUDE, src, "-o", exe])
    assert proc.returncode == 0, proc.stderr
    out = run([exe]).stdout.split("\n")
    seen = 0
    for line in filter(None, out):
        kind, name, value = line.split()
        value = int(value)
        if kind in fields:
            cls = fields[kind][0]
            expected = ctypes.sizeof(cls) if name == "sizeof" else getattr(cls, name).offset
            assert expected == value, f"{kind}.{name}: ctypes {expected}, C {value}"
        elif kind == "macro":
            attr = name[len("PKGNET_"):]
            assert getattr(_native, attr) == value, name
        else:
            assert _native.STATUS_NAMES[value] == name
        seen += 1
    assert seen == sum(len(n) + 1 for _c, n in fields.values()) + len(macros) + len(_native.STATUS_NAMES)
