"""Unit tests of the PyTorch backend's device reduction (`reduce_head`, run here with CPU
torch) followed by `decode_candidates`: the same detections as `decode_yolo` on the full
head output, for random and real-looking outputs, class filters, batch padding and the
candidate cap. Skipped, saying why, where torch is not installed (extra ``torch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from itsd.engines import postprocess
from itsd.engines.base import Detections, EngineOptions
from itsd.engines.postprocess import decode_candidates, decode_yolo
from itsd.engines.preprocess import Letterbox, letterbox_params

torch = pytest.importorskip("torch", reason="needs torch (pip install itsd[torch])")

from itsd.engines.torch_backend import reduce_head  # noqa: E402

NC = 80
LB = letterbox_params(360, 640, 320, 320)


def random_output(rng: np.random.Generator, n: int, anchors: int = 2100) -> np.ndarray:
    """Uniform boxes anywhere, class scores skewed low (a few hundred anchors above 0.25)."""
    out = np.empty((n, 4 + NC, anchors), np.float32)
    out[:, :2] = rng.uniform(0, 320, (n, 2, anchors))
    out[:, 2:4] = rng.uniform(2, 90, (n, 2, anchors))
    out[:, 4:] = rng.uniform(0, 1, (n, NC, anchors)) ** 60
    return out


def real_looking_output(rng: np.random.Generator, n: int, anchors: int = 2100) -> np.ndarray:
    """A head's look: sigmoid scores near zero, and objects as clusters of anchors with
    jittered boxes around one centre, one strong class and a weaker second one."""
    out = np.empty((n, 4 + NC, anchors), np.float32)
    out[:, :2] = rng.uniform(0, 320, (n, 2, anchors))
    out[:, 2:4] = rng.uniform(4, 40, (n, 2, anchors))
    out[:, 4:] = 1 / (1 + np.exp(-rng.normal(-7, 1.5, (n, NC, anchors))))
    for i in range(n):
        for _ in range(int(rng.integers(3, 25))):
            cx, cy, w, h = rng.uniform(20, 300), rng.uniform(20, 300), *rng.uniform(8, 120, 2)
            cls, other = rng.choice((0, 1, 2, 3, 5, 7), 2, replace=False)
            idx = rng.choice(anchors, int(rng.integers(4, 30)), replace=False)
            jitter = rng.normal(0, 0.06, (4, idx.size))
            out[i, 0, idx] = cx + jitter[0] * w
            out[i, 1, idx] = cy + jitter[1] * h
            out[i, 2, idx] = w * (1 + jitter[2])
            out[i, 3, idx] = h * (1 + jitter[3])
            strength = rng.uniform(0.2, 0.95)
            out[i, 4 + cls, idx] = strength * rng.uniform(0.5, 1.0, idx.size)
            out[i, 4 + other, idx] = strength * rng.uniform(0.1, 0.5, idx.size)
    return out


def reduced(out: np.ndarray, opts: EngineOptions, **kw: Any) -> np.ndarray:
    with torch.inference_mode():
        t = reduce_head(torch.from_numpy(out), opts.confidence, opts.classes, **kw)
    assert t.dtype == torch.float32 and t.shape[0] == out.shape[0] and t.shape[2] == 6
    return np.asarray(t.numpy())


def _in_order(d: Detections) -> Detections:
    """Detections by score, then box: candidates of exactly equal score may come out
    of the device's top-k in another order than the anchors' (ties aside)."""
    order = np.lexsort((d.boxes[:, 1], d.boxes[:, 0], -d.scores))
    return Detections(boxes=d.boxes[order], scores=d.scores[order], class_ids=d.class_ids[order])


def assert_same(got: Detections, ref: Detections) -> None:
    assert len(got) == len(ref)
    assert (np.diff(got.scores) <= 0).all()  # best first, as decode_yolo gives them
    got, ref = _in_order(got), _in_order(ref)
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-3)
    np.testing.assert_array_equal(got.class_ids, ref.class_ids)
    np.testing.assert_array_equal(got.scores, ref.scores)
    assert got.boxes.dtype == np.float32 and got.class_ids.dtype == np.int32


def check(out: np.ndarray, opts: EngineOptions, lb: Letterbox = LB, **kw: Any) -> int:
    """Compare both decodes for every image of `out`; the number of detections."""
    cand = reduced(out, opts, **kw)
    total = 0
    for i in range(out.shape[0]):
        ref = decode_yolo(out[i], lb, lb.src_h, lb.src_w, opts)
        assert_same(decode_candidates(cand[i], lb, lb.src_h, lb.src_w, opts), ref)
        total += len(ref)
    return total


@pytest.mark.parametrize("make", [random_output, real_looking_output])
@pytest.mark.parametrize(
    "opts",
    [
        EngineOptions(),
        EngineOptions(confidence=0.5, iou=0.7),
        EngineOptions(classes=(2, 7)),
        EngineOptions(max_detections=3),
    ],
    ids=["default", "conf0.5-iou0.7", "classes", "max3"],
)
def test_reduced_output_decodes_to_the_detections_of_the_full_output(
    make: Any, opts: EngineOptions
) -> None:
    rng = np.random.default_rng(7)
    assert check(make(rng, 4), opts) > 0


def test_640_input_and_other_letterbox() -> None:
    rng = np.random.default_rng(3)
    lb = letterbox_params(1080, 1920, 640, 640)
    assert check(real_looking_output(rng, 2, anchors=8400), EngineOptions(), lb) > 0


def test_batch_padding_rows_and_an_image_with_nothing_are_dropped() -> None:
    rng = np.random.default_rng(5)
    out = real_looking_output(rng, 3)
    out[1, 4:] = 0.01  # nothing above the confidence in image 1
    out[2, 4:, 100:] = 0.01  # image 2 has far fewer candidates than image 0
    cand = reduced(out, EngineOptions())
    assert cand.shape[1] == int((out[0, 4:].max(0) > 0.25).sum())
    assert (cand[1, :, 4] <= 0.25).all()
    check(out, EngineOptions())
    assert len(decode_candidates(cand[1], LB, 360, 640, EngineOptions())) == 0


def test_nothing_above_confidence_anywhere_gives_no_rows() -> None:
    out = np.full((2, 4 + NC, 2100), 0.01, np.float32)
    cand = reduced(out, EngineOptions())
    assert cand.shape == (2, 0, 6)
    assert len(decode_candidates(cand[0], LB, 360, 640, EngineOptions())) == 0


def test_the_candidate_cap_keeps_the_best_as_decode_yolo_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(postprocess, "MAX_NMS_CANDIDATES", 50)
    rng = np.random.default_rng(11)
    out = random_output(rng, 2)
    assert (out[:, 4:].max(1) > 0.25).sum(1).min() > 50
    for opts in (EngineOptions(), EngineOptions(classes=(1, 2, 3))):
        assert reduced(out, opts, max_candidates=50).shape[1] == 50
        check(out, opts, max_candidates=50)


def test_fp16_head_output_gives_the_detections_of_its_fp32_copy() -> None:
    """As on a GPU in fp16: the reduction runs on the half tensor, decode_yolo on its
    fp32 copy. Scores are made distinct in fp16 so that ties cannot reorder NMS."""
    rng = np.random.default_rng(2)
    out = real_looking_output(rng, 2).astype(np.float16)
    out[:, 4:] = np.minimum(out[:, 4:], np.float16(0.2))
    picks = rng.permutation(out.shape[0] * out.shape[2])[:300]  # 300 anchors of 2 images
    values = np.float16(0.3) + np.arange(300, dtype=np.float16) * np.float16(0.002)
    assert np.unique(values).size == 300
    for v, p in zip(values, picks, strict=True):
        out[p // out.shape[2], 4 + int(p % 7), p % out.shape[2]] = v
    opts = EngineOptions()
    with torch.inference_mode():
        cand = reduce_head(torch.from_numpy(out), opts.confidence).numpy()
    full = out.astype(np.float32)
    for i in range(out.shape[0]):
        ref = decode_yolo(full[i], LB, 360, 640, opts)
        assert len(ref) > 0
        assert_same(decode_candidates(cand[i], LB, 360, 640, opts), ref)


def test_decode_candidates_rejects_malformed_rows_and_size_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(k, 6\)"):
        decode_candidates(np.zeros((10, 5), np.float32), LB, 360, 640, EngineOptions())
    with pytest.raises(ValueError, match="does not match the letterbox"):
        decode_candidates(np.zeros((0, 6), np.float32), LB, 100, 640, EngineOptions())
    one = np.array([[[160, 160, 20, 20, 0.9, 2]]], np.float32)  # a batch axis of 1
    assert decode_candidates(one, LB, 360, 640, EngineOptions()).class_ids.tolist() == [2]
