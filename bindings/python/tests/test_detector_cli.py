"""`pkgnet eval --boxes detector[+motion]` and `pkgnet detect` with the
Yolo-Fastest 1.1 files of the shared folder; bad detector options and files
give a clear error."""

import re

import numpy as np
import pytest

import pkgnet
from support import need_shared
from test_cli import cli, expect_error, make_subset, model, ped2, run  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def yolo():
    folder = need_shared("weights", "yolo-fastest-1.1")
    return folder / "yolo-fastest-1.1.cfg", folder / "yolo-fastest-1.1.weights"


@pytest.fixture
def subset(ped2, tmp_path):  # noqa: F811
    return make_subset(ped2, tmp_path / "data", frames=8)


def detector_args(yolo, *extra):
    return ["--detector-cfg", yolo[0], "--detector-weights", yolo[1], *extra]


def test_eval_with_the_detector(cli, model, subset, yolo, tmp_path):  # noqa: F811
    for boxes in ("detector", "detector+motion"):
        proc = run(cli, "eval", "--model", model, "--data", subset, "--boxes", boxes, "--threads", "2",
                   "--scores", tmp_path / "s.csv", *detector_args(yolo, "--detector-classes", "person,bicycle,2"))
        assert proc.returncode == 0, proc.stderr
        assert "detector %s: 320x320, person,bicycle,car, confidence > 0.5" % yolo[0] in proc.stdout
        assert re.search(r"^AUROC (\d\.\d{4}|nan)$", proc.stdout, re.M)
        objects = int(re.search(r"^01 +8 +\d+ +(\d+)", proc.stdout, re.M).group(1))
        assert objects > 0, proc.stdout


def test_eval_detector_errors(cli, model, subset, yolo, tmp_path):  # noqa: F811
    base = ["eval", "--model", model, "--data", subset]
    proc = run(cli, *base, "--boxes", "detector+motion")
    assert proc.returncode == 64 and "--detector-cfg" in proc.stderr
    proc = run(cli, *base, *detector_args(yolo))
    assert proc.returncode == 64 and "--boxes detector" in proc.stderr
    proc = run(cli, *base, "--boxes", "detector", "--detector-cfg", yolo[0])
    assert proc.returncode == 64 and "go together" in proc.stderr
    proc = run(cli, *base, "--boxes", "detector", *detector_args(yolo, "--detector-threshold", "1.5"))
    assert proc.returncode == 64 and "--detector-threshold" in proc.stderr
    expect_error(run(cli, *base, "--boxes", "detector", *detector_args(yolo, "--detector-classes", "person,unicorn")),
                 "'unicorn' is not a class")
    expect_error(run(cli, *base, "--boxes", "detector", *detector_args(yolo, "--detector-classes", "80")),
                 "class 80")
    bad = tmp_path / "bad.cfg"
    bad.write_text(yolo[0].read_text().replace("[upsample]\nstride = 2", "[upsample]\nstride = -2", 1))
    expect_error(run(cli, *base, "--boxes", "detector", "--detector-cfg", bad, "--detector-weights", yolo[1]),
                 "bad.cfg:", "[upsample]", "stride=-2")
    short = tmp_path / "short.weights"
    short.write_bytes(yolo[1].read_bytes()[:100_000])
    expect_error(run(cli, *base, "--boxes", "detector", "--detector-cfg", yolo[0], "--detector-weights", short),
                 "short.weights", "truncated", "[convolutional]")


def test_detect_prints_the_objects(cli, ped2, yolo):  # noqa: F811
    import cv2
    image = ped2 / "testing" / "frames" / "01" / "100.jpg"
    proc = run(cli, "detect", *detector_args(yolo, "--detector-classes", "person"), image)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "image,class_id,class,confidence,x1,y1,x2,y2"
    found = pkgnet.Detector(*yolo).detect(cv2.imread(str(image)), classes=[0])
    assert len(lines) - 1 == len(found) > 0
    for line, box, confidence in zip(lines[1:], found.box, found.confidence):
        fields = line.split(",")
        assert fields[:3] == [str(image), "0", "person"]
        assert abs(float(fields[3]) - confidence) <= 5e-5
        np.testing.assert_allclose([float(v) for v in fields[4:]], box, atol=5e-3)
    expect_error(run(cli, "detect", *detector_args(yolo), image.parent / "missing.jpg"), "missing.jpg")
