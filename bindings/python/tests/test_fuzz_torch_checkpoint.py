"""Replays the torch checkpoint fuzz seeds, their truncations and the saved
findings (Fuzz/regressions/torch-*) through the reader: each must load or
raise a pkgnet.Error subclass. The fuzzing itself is scripts/fuzz.sh."""
import pytest

import fuzz_torch_checkpoint as fz


CASES = dict(fz.seeds(), **fz.regression_inputs())


@pytest.mark.parametrize("name", sorted(CASES))
def test_seed_and_its_truncations_never_escape(name):
    blob = CASES[name]
    fz.check_one(blob)
    for cut in sorted({1, 2, 8, 30, len(blob) // 3, len(blob) // 2, len(blob) - 1}):
        if 0 < cut < len(blob):
            fz.check_one(blob[:cut])
    # A flipped byte every 97 bytes: damage inside pickles and zip records.
    for at in range(0, len(blob), 97):
        fz.check_one(blob[:at] + bytes([blob[at] ^ 0x5A]) + blob[at + 1:])


def test_check_one_reports_foreign_exceptions(monkeypatch):
    # The harness must fail on anything but pkgnet.Error, or it checks nothing.
    from pkgnet import torch_checkpoint as tc

    def broken(path):
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(tc, "load_state_dict", broken)
    with pytest.raises(ZeroDivisionError):
        fz.check_one(b"x")


def test_forged_memo_index_is_refused_before_allocating(tmp_path):
    # A 900-byte legacy checkpoint whose LONG_BINPUT index is 1.1e9: CPython's
    # unpickler would size its memo array by it (gigabytes) before failing.
    import resource
    from pkgnet import torch_checkpoint as tc
    from pkgnet.errors import FormatError
    blob = fz.regression_inputs()["torch-oom-memo-index"]
    path = tmp_path / "memo.pt"
    path.write_bytes(blob)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FormatError, match="memo index 1107978339"):
        tc.load_state_dict(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
