"""The `pkgnet` command line end to end: `eval` on a Ped2 video (CSV, stdout,
HTML report rendered in headless Chromium), broken data sets of every kind
(clear error, exit status 1, CSV of finished videos kept), `info`, `--version`.

The binary is $PKGNET_CLI, else .build/release/pkgnet (`make build`), else
.build/release/pkgnet-cli."""

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from pkgnet import synthetic
from support import REPO, need_shared

PED2_FRAMES = 180  # video 01


def cli_path():
    env = os.environ.get("PKGNET_CLI")
    candidates = [Path(env)] if env else [REPO / ".build/release/pkgnet", REPO / ".build/release/pkgnet-cli"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    message = "pkgnet CLI not built (run `make build`, or set PKGNET_CLI): looked for %s" % ", ".join(map(str, candidates))
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def cli():
    return cli_path()


def run(cli, *args, timeout=600):
    # Bytes, decoded here: text mode would turn the progress bar's \r into \n.
    proc = subprocess.run([str(cli), *map(str, args)], capture_output=True, timeout=timeout)
    proc.stdout = proc.stdout.decode("utf-8", "replace")
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    # Whatever the input, the tool must exit, not die of a signal or a Swift trap.
    assert proc.returncode >= 0, "killed by signal %d\n%s" % (-proc.returncode, proc.stderr[-2000:])
    for word in ("Fatal error", "Fatal access", "Illegal instruction", "Segmentation"):
        assert word not in proc.stderr, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "k2_w16_resnet18.safetensors"
    synthetic.random_model(str(path), k=2, width=16, arch="resnet18")
    return path


@pytest.fixture(scope="module")
def ped2():
    return need_shared("data", "ped2")


# ---------------------------------------------------------------------------
# helpers

def read_csv(path):
    lines = Path(path).read_text().splitlines()
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def medfilt(x, window):
    """scipy.signal.medfilt for 1-D input: zero-padded at both ends."""
    half = window // 2
    padded = np.concatenate([np.zeros(half, x.dtype), x, np.zeros(half, x.dtype)])
    return np.array([np.median(padded[i:i + window]) for i in range(len(x))], dtype=x.dtype)


def auroc(scores, labels):
    """Rank (Mann-Whitney) AUROC with ties averaged, as sklearn's roc_auc_score."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    p, n = labels.sum(), (~labels).sum()
    return (ranks[labels].sum() - p * (p + 1) / 2) / (p * n)


def write_png(path, rgb):
    """A plain 8-bit RGB PNG (no PIL needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_subset(ped2, root, videos=("01",), frames=10):
    """root/testing/{frames,boxes,labels} with the first `frames` frames of
    Ped2 video 01, under each name in `videos`."""
    src = ped2 / "testing"
    for name in videos:
        fdir = root / "testing" / "frames" / name
        fdir.mkdir(parents=True)
        for t in range(frames):
            shutil.copy(src / "frames" / "01" / ("%03d.jpg" % t), fdir / ("%03d.jpg" % t))
        for kind in ("boxes", "labels"):
            (root / "testing" / kind).mkdir(parents=True, exist_ok=True)
            lines = (src / kind / "01.csv").read_text().splitlines()
            kept = [lines[0]] + [l for l in lines[1:] if l.strip() and int(l.split(",")[0]) < frames]
            (root / "testing" / kind / (name + ".csv")).write_text("\n".join(kept) + "\n")
    return root


# ---------------------------------------------------------------------------
# eval on Ped2 video 01

@pytest.fixture(scope="module")
def ped2_run(cli, model, ped2, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    scores, report = out / "scores.csv", out / "report.html"
    proc = run(cli, "eval", "--model", model, "--data", ped2, "--videos", "01",
               "--scores", scores, "--report", report)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, scores, report


def test_eval_ped2_outputs(ped2_run, ped2):
    proc, scores, _ = ped2_run
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"AUROC \d\.\d{4}", lines[-1]), lines[-1]
    header, rows = read_csv(scores)
    assert header == ["video", "frame", "label", "prediction_error", "inconsistency_1", "inconsistency_2",
                      "combined_raw", "score"]
    assert len(rows) == PED2_FRAMES
    assert all(len(r) == 8 and r[0] == "01" for r in rows)
    assert [int(r[1]) for r in rows] == list(range(PED2_FRAMES))

    truth = [int(l.split(",")[1]) for l in (ped2 / "testing/labels/01.csv").read_text().splitlines()[1:] if l.strip()]
    labels = [int(r[2]) for r in rows]
    assert labels == truth

    values = np.array([[float(x) for x in r[3:]] for r in rows], dtype=np.float32)
    assert np.isfinite(values).all()
    raw, score = values[:, -2], values[:, -1]
    # score = the model's median filter (window 19) over the raw frame scores.
    np.testing.assert_array_equal(score, medfilt(raw, 19))
    # The printed AUROC is the one of the CSV's scores.
    assert lines[-1] == "AUROC %.4f" % auroc(score, labels)
    # Per-video row and the speed line.
    row = next(l for l in lines if l.startswith("01 "))
    assert row.split()[-1] == "%.4f" % auroc(score, labels)
    assert re.search(r"^180 frames in [\d.]+ s: [\d.]+ frames/s$", proc.stdout, re.M)
    # Not a TTY: plain progress lines on stderr, never the bar's \r.
    assert "frames/s" in proc.stderr and "\r" not in proc.stderr


def test_report_is_self_contained(ped2_run):
    html = ped2_run[2].read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    for value in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert value.startswith(("data:", "#")), value
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", html))
    assert html.count('<svg class="chart"') == 1
    assert html.count('<tr class="object">') == 8
    # Per object: true crop, prediction, error map, two inconsistency maps,
    # each a 128x128 PNG (nearest-neighbour enlarged).
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 40
    import base64
    for uri in uris:
        png = base64.b64decode(uri)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == (128, 128)
    assert "normalised to [0, 1]" in html


VIRIDIS = np.array([(68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142),
                    (31, 158, 137), (53, 183, 121), (110, 206, 88), (253, 231, 37)], np.float64)


def colour_count(pixels, hex_colour, tolerance=10):
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - target).max(axis=-1) <= tolerance).sum())


def test_report_renders_in_chromium(ped2_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium, or `make deps`): "
                    "the report's rendering is not checked")
    Image = pytest.importorskip("PIL.Image", reason="pillow not installed (pip install pillow): cannot read the screenshot")
    shot = tmp_path / "report.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-device-scale-factor=1", "--screenshot=%s" % shot, "--window-size=1200,2600",
                           ped2_run[2].resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (2600, 1200, 3)

    # The chart: each curve in its colour (lines of ~900 px, far more than
    # the legend's 16-px swatches), and the abnormal frames shaded.
    for name, colour in [("prediction error", "#1f77b4"), ("inconsistency 1", "#ff7f0e"),
                         ("inconsistency 2", "#9467bd"), ("combined", "#2ca02c")]:
        assert colour_count(pixels, colour, 40) > 300, name
    assert colour_count(pixels, "#f6c4c0", 4) > 50_000   # 120 of 180 frames x 200 px

    # The object images: the three colour maps per object (viridis) ...
    lut = np.concatenate([VIRIDIS[i] + (VIRIDIS[i + 1] - VIRIDIS[i]) * f[:, None]
                          for i, f in enumerate([np.linspace(0, 1, 32, endpoint=False)] * 8)] + [VIRIDIS[-1:]])
    sample = pixels[::2, ::2].reshape(-1, 3).astype(np.float64)
    nearest = np.min(((sample[:, None, :] - lut[None, :, :]) ** 2).sum(-1), axis=1)
    chroma = sample.max(axis=1) - sample.min(axis=1)
    mapped = int(((nearest <= 12) & (chroma > 30)).sum()) * 4
    assert mapped > 8 * 3 * 128 * 128 * 0.6, mapped
    # ... and the true crops: Ped2 is grey, so large mid-grey areas.
    grey = (chroma < 6) & (sample.mean(axis=1) > 40) & (sample.mean(axis=1) < 215)
    assert int(grey.sum()) * 4 > 8 * 128 * 128 * 0.5


# ---------------------------------------------------------------------------
# broken inputs: a message naming the file, exit status 1, nothing crashes

def expect_error(proc, *words):
    assert proc.returncode == 1, "exit %d\nstdout: %s\nstderr: %s" % (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
    for word in words:
        assert word in proc.stderr, "%r not in:\n%s" % (word, proc.stderr[-2000:])


@pytest.fixture
def subset(ped2, tmp_path):
    return make_subset(ped2, tmp_path / "data")


def eval_args(model, data, *extra):
    return ["eval", "--model", model, "--data", data, *extra]


def test_subset_runs(cli, model, subset, tmp_path):
    proc = run(cli, *eval_args(model, subset, "--scores", tmp_path / "s.csv", "--median-window", "5", "--top-k", "3"))
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"AUROC (\d\.\d{4}|nan)", proc.stdout.strip().splitlines()[-1])
    assert len(read_csv(tmp_path / "s.csv")[1]) == 10
    for boxes in ("motion", "given+motion"):
        proc = run(cli, *eval_args(model, subset, "--boxes", boxes, "--videos", "1"))
        assert proc.returncode == 0, proc.stderr


def test_progress_bar_on_request(cli, model, subset):
    proc = run(cli, *eval_args(model, subset, "--progress"))
    assert proc.returncode == 0
    assert "\r" in proc.stderr and "frames/s" in proc.stderr and "[" in proc.stderr
    quiet = run(cli, *eval_args(model, subset, "--quiet"))
    assert quiet.returncode == 0 and "frames/s" not in quiet.stderr


def test_missing_directories(cli, model, subset, tmp_path):
    expect_error(run(cli, *eval_args(model, tmp_path / "nowhere")), "nowhere", "does not exist")
    shutil.rmtree(subset / "testing" / "frames")
    expect_error(run(cli, *eval_args(model, subset)), "no frames folder", str(subset))


def test_missing_labels_and_boxes(cli, model, subset):
    shutil.rmtree(subset / "testing" / "boxes")
    expect_error(run(cli, *eval_args(model, subset)), "boxes/01.csv", "not found")
    # Motion proposals need no box files.
    assert run(cli, *eval_args(model, subset, "--boxes", "motion")).returncode == 0
    shutil.rmtree(subset / "testing" / "labels")
    expect_error(run(cli, *eval_args(model, subset, "--boxes", "motion")), "labels/01.csv", "not found")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "folder", "dangling"])
def test_bad_image(cli, model, subset, damage):
    frame = subset / "testing/frames/01/005.jpg"
    data = frame.read_bytes()
    frame.unlink()
    if damage == "garbage":
        frame.write_bytes(b"this is not a jpeg" * 10)
        words = ["not a JPEG, PNG or TIFF"]
    elif damage == "truncated":
        frame.write_bytes(data[: len(data) // 2])
        words = ["JPEG"]
    elif damage == "empty":
        frame.write_bytes(b"")
        words = ["empty"]
    elif damage == "folder":
        frame.mkdir()
        words = ["not a regular file"]
    else:
        frame.symlink_to(subset / "gone.jpg")
        words = ["cannot open"]
    expect_error(run(cli, *eval_args(model, subset)), "005.jpg", *words)


def test_missing_frame_file(cli, model, subset):
    (subset / "testing/frames/01/004.jpg").unlink()
    expect_error(run(cli, *eval_args(model, subset)), "frame missing", "003.jpg is followed by 005.jpg")


def test_frame_size_changes(cli, model, subset):
    (subset / "testing/frames/01/006.jpg").unlink()
    write_png(subset / "testing/frames/01/006.png", np.full((120, 180, 3), 90, np.uint8))
    expect_error(run(cli, *eval_args(model, subset)), "006.png", "frame 6", "180x120", "360x240")


def test_label_count_mismatch(cli, model, subset):
    labels = subset / "testing/labels/01.csv"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-1]) + "\n")
    expect_error(run(cli, *eval_args(model, subset)), "labels/01.csv", "9 label rows", "10 frames")


def test_box_names_missing_frame(cli, model, subset):
    boxes = subset / "testing/boxes/01.csv"
    boxes.write_text(boxes.read_text() + "50,10,10,30,40\n")
    expect_error(run(cli, *eval_args(model, subset)), "boxes/01.csv", "names frame 50", "10 frames")


@pytest.mark.parametrize("row,words", [("3,10,10,30\n", ["'y2'"]), ("3,10,ten,30,40\n", ["y1 'ten'"]),
                                       ("x,1,2,3,4\n", ["frame 'x'"]), ("3,1,2,inf,4\n", ["not a finite number"])])
def test_malformed_box_rows(cli, model, subset, row, words):
    boxes = subset / "testing/boxes/01.csv"
    text = boxes.read_text()
    line = len(text.splitlines()) + 1
    boxes.write_text(text + row)
    expect_error(run(cli, *eval_args(model, subset)), "boxes/01.csv line %d" % line, *words)


def test_malformed_label_row(cli, model, subset):
    labels = subset / "testing/labels/01.csv"
    lines = labels.read_text().splitlines()
    lines[3] = "2,maybe"
    labels.write_text("\n".join(lines) + "\n")
    expect_error(run(cli, *eval_args(model, subset)), "labels/01.csv line 4", "0 or 1")


def test_csv_keeps_finished_videos(cli, model, ped2, tmp_path):
    data = make_subset(ped2, tmp_path / "data", videos=("01", "02"))
    (data / "testing/frames/02/007.jpg").write_bytes(b"\xff\xd8\xff broken")
    scores = tmp_path / "scores.csv"
    proc = run(cli, *eval_args(model, data, "--scores", scores))
    expect_error(proc, "02/007.jpg")
    header, rows = read_csv(scores)
    assert header[0] == "video" and header[-1] == "score"
    assert len(rows) == 10 and {r[0] for r in rows} == {"01"}
    assert all(len(r) == len(header) for r in rows)
    assert "holds the 1 video finished before the error" in proc.stderr
    # Video 01's row was printed before the error.
    assert re.search(r"^01\s+10\s", proc.stdout, re.M)


def test_bad_options(cli, model, subset, tmp_path):
    proc = run(cli, *eval_args(model, subset, "--median-window", "4"))
    assert proc.returncode == 64 and "--median-window" in proc.stderr
    proc = run(cli, *eval_args(model, subset, "--boxes", "detector"))
    assert proc.returncode == 64
    proc = run(cli, *eval_args(model, subset, "--scene", "mall"))
    assert proc.returncode == 64 and "ped2" in proc.stderr
    expect_error(run(cli, *eval_args(model, subset, "--videos", "01,99")), "video '99' is not in")
    expect_error(run(cli, *eval_args(tmp_path / "none.safetensors", subset)), "none.safetensors")
    expect_error(run(cli, *eval_args(model, subset, "--scores", tmp_path / "no/dir/s.csv")), "no/dir/s.csv")


# ---------------------------------------------------------------------------
# info and version

def test_info_and_version(cli, model, tmp_path):
    proc = run(cli, "info", "--model", model)
    assert proc.returncode == 0, proc.stderr
    assert "k=2, width 16" in proc.stdout and "resnet18" in proc.stdout
    assert "median window 19" in proc.stdout and "libjpeg" in proc.stdout
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    expect_error(run(cli, "info", "--model", bad), "bad.safetensors")
    version = run(cli, "--version")
    header = (REPO / "include/pkgnet.h").read_text()
    expected = re.search(r'#define PKGNET_VERSION_STRING "([^"]+)"', header).group(1)
    assert version.returncode == 0 and version.stdout.strip() == "pkgnet " + expected


@pytest.mark.parametrize("arch,pairs", [
    ("resnet18", None),
    ("resnet20", [("d8", "layer3"), ("d16", "layer2")]),
    ("efficientnet_lite0", [("bottleneck", "blocks.4"), ("d8", "blocks.2")]),  # with projections
])
def test_bench_counts_the_direct_convolutions(cli, arch, pairs, tmp_path):
    """pkgnet bench's GFLOP per cube against the multiply-adds of the ONNX
    graph benchmarks/onnx_graph.py builds from the same file (shapes from
    ONNX shape inference); every requested row is printed."""
    import sys
    pytest.importorskip("onnx")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from onnx_graph import build_onnx, multiply_adds

    model = tmp_path / ("k2_w16_%s.safetensors" % arch)
    synthetic.random_model(str(model), k=2, width=16, arch=arch, pairs=pairs)
    proc = run(cli, "bench", "--model", model, "--threads", 1, 2, "--batches", 1, 3, "--seconds", 0)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stated = float(re.search(r"([0-9.]+) GFLOP per cube", proc.stdout).group(1))
    assert stated == pytest.approx(2 * multiply_adds(build_onnx(str(model))) / 1e9, abs=6e-4)
    for threads in (1, 2):
        for batch in (1, 3):
            assert re.search(r"threads %d  batch +%d +[0-9.]+ cubes/s +[0-9.]+ GFLOP/s" % (threads, batch), proc.stdout), proc.stdout
        assert re.search(r"threads %d  frame latency \(17 cubes\)  [0-9.]+ ms" % threads, proc.stdout), proc.stdout
    assert re.search(r"peak resident memory [0-9.]+ MiB", proc.stdout)


def test_bench_refuses_bad_arguments(cli, model, tmp_path):
    for args, word in ((("--batches", 0), "--batches"), (("--threads", -1), "--threads")):
        proc = run(cli, "bench", "--model", model, *args)
        assert proc.returncode == 64 and word in proc.stderr, (proc.returncode, proc.stderr)  # usage error
    expect_error(run(cli, "bench", "--model", tmp_path / "missing.safetensors"), "missing.safetensors")
