"""pkgnet.Stream and pkgnet.cubes end to end, against the same pipeline
assembled by hand from its parts: pkgnet.cubes + Model.score, a numpy top-k
mean, and scipy.signal.medfilt as the independent median filter."""

import threading

import numpy as np
import pytest

import pkgnet
from pkgnet import synthetic

scipy_signal = pytest.importorskip("scipy.signal")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "k2-w16.safetensors"
    synthetic.random_model(str(path), k=2, width=16, arch="resnet18", seed=11)
    with pkgnet.Model(str(path), threads=1) as m:
        yield m


def scene(n=14, height=96, width=128, seed=0):
    """Frames of a textured background with two squares moving across it,
    and detector boxes [x1, y1, x2, y2, confidence] that follow them."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    frames, detections = [], []
    for t in range(n):
        f = background.copy()
        boxes = []
        for k, (x0, y0, speed) in enumerate([(6, 10, 4), (70, 50, -3)]):
            x = x0 + speed * t
            f[y0:y0 + 24, x:x + 16] = (30 + 90 * k, 220 - 60 * k, 120)
            boxes.append([x - 2, y0 - 2, x + 18, y0 + 26, 0.9])
        frames.append(f)
        detections.append(np.array(boxes, np.float32))
    return frames, detections


def reference(model, frames, detections, top_k, window, motion):
    """Object and frame scores of the published pipeline, from the parts."""
    n = len(frames)
    objects, raw = [], []
    for t in range(n):
        boxes = detections[t][:, :4]
        if motion:
            trio = [frames[max(t - 1, 0)], frames[t], frames[min(t + 1, n - 1)]]
            proposals = pkgnet.motion_proposals(trio, boxes)
            boxes = np.concatenate([boxes, proposals]) if len(proposals) else boxes
        past = [frames[max(i, 0)] for i in range(t - 4, t + 1)]
        combined = model.score(pkgnet.cubes(past, boxes)).combined if len(boxes) else np.zeros(0, np.float32)
        objects.append(combined)
        raw.append(np.sort(combined)[::-1][:top_k].mean() if len(combined) else 0.0)
    raw = np.array(raw, np.float32)
    return objects, raw, scipy_signal.medfilt(raw, window)


def run(stream, frames, detections):
    objects = {}
    scores = {}
    for f, d in zip(frames, detections):
        collect(stream.push(f, d), objects, scores)
    collect(stream.finish(), objects, scores)
    return objects, scores


def collect(step, objects, scores):
    for t in np.unique(step.frame):
        objects[int(t)] = step.combined[step.frame == t]
    for frame, raw, smoothed in step.frame_scores:
        scores[frame] = (raw, smoothed)


@pytest.mark.parametrize("motion", [False, True])
def test_stream_matches_the_pipeline_built_from_its_parts(model, motion):
    frames, detections = scene()
    with pkgnet.Stream(model, use_motion=motion, top_k=2, median_window=5) as stream:
        objects, scores = run(stream, frames, detections)
    ref_objects, ref_raw, ref_smoothed = reference(model, frames, detections, 2, 5, motion)
    assert sorted(objects) == list(range(len(frames)))
    for t, expected in enumerate(ref_objects):
        np.testing.assert_allclose(np.sort(objects[t]), np.sort(expected), rtol=1e-6, err_msg=f"frame {t}")
    assert sorted(scores) == list(range(len(frames)))
    np.testing.assert_allclose([scores[t][0] for t in range(len(frames))], ref_raw, rtol=1e-6)
    np.testing.assert_allclose([scores[t][1] for t in range(len(frames))], ref_smoothed, rtol=1e-6)


def test_centred_median_is_delayed_by_half_a_window(model):
    frames, detections = scene(n=9)
    with pkgnet.Stream(model, median_window=5) as stream:
        finals = [[s[0] for s in stream.push(f, d).frame_scores] for f, d in zip(frames, detections)]
    assert finals[:2] == [[], []]
    assert finals[2:] == [[t] for t in range(7)]


def test_causal_median_has_no_delay(model):
    frames, detections = scene(n=6)
    with pkgnet.Stream(model, median_window=5, causal=True) as stream:
        for t, (f, d) in enumerate(zip(frames, detections)):
            assert [s[0] for s in stream.push(f, d).frame_scores] == [t]


def test_cubes_report_problem_boxes(model):
    frames, _ = scene(n=5)
    boxes = [[10, 10, 40, 50], [np.nan, 0, 5, 5], [30, 30, 20, 40], [500, 500, 600, 600]]
    cubes, problems = pkgnet.cubes(frames, boxes, return_problems=True)
    assert cubes.shape == (4, 5, 32, 32, 3)
    assert [pkgnet.video.BOX_PROBLEMS[p] for p in problems] == ["ok", "non-finite", "inverted", "empty"]
    assert cubes[1:].max() == 0 and cubes[0].max() > 0
    grey = pkgnet.cubes([f[:, :, 1] for f in frames], boxes[:1])
    assert np.array_equal(grey[..., 0], grey[..., 2])


def test_bad_input_is_refused_and_the_stream_goes_on(model):
    frames, detections = scene(n=4)
    with pkgnet.Stream(model, median_window=1) as stream:
        stream.push(frames[0], detections[0])
        with pytest.raises(pkgnet.InvalidArgumentError, match="must not change"):
            stream.push(frames[1][:50], detections[1])
        with pytest.raises(pkgnet.InvalidArgumentError, match="detections"):
            stream.push(frames[1], np.zeros((2, 3)))
        with pytest.raises(pkgnet.InvalidArgumentError, match="uint8"):
            stream.push(frames[1].astype(np.float32), detections[1])
        step = stream.push(frames[1], detections[1])
        assert [s[0] for s in step.frame_scores] == [1]
    with pytest.raises(pkgnet.InvalidArgumentError, match="closed"):
        stream.push(frames[2], detections[2])
    with pytest.raises(pkgnet.InvalidArgumentError, match="scene"):
        pkgnet.Stream(model, scene="mall")
    with pytest.raises(pkgnet.InvalidArgumentError):
        pkgnet.Stream(model, median_window=4)


def test_streams_on_threads_match_one_by_one(model):
    clips = [scene(n=8, seed=s) for s in range(3)]

    def scores_of(frames, detections):
        with pkgnet.Stream(model, top_k=3, median_window=3) as stream:
            return run(stream, frames, detections)[1]

    alone = [scores_of(*clip) for clip in clips]
    together = [None] * len(clips)

    def work(i):
        together[i] = scores_of(*clips[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
