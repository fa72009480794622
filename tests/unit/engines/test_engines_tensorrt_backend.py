"""Unit tests of the TensorRT backend's logic that needs no GPU (TensorRT is not here).

The module must import without tensorrt and cuda-python; engine cache keys change with
every input that makes an engine invalid; binding shapes and buffer plans are sized for
the max batch.
"""

from __future__ import annotations

import importlib.util

import pytest

from itsd.engines import tensorrt_backend as trtb
from itsd.engines.base import EngineOptions
from itsd.errors import ModelError

SHA = "5ea9b19c6c4d89041175fd2d4f9d2e1581d16f37b817021d547278fc5e2f2b58"
BASE = (SHA, "NVIDIA H200", (9, 0), "10.9.0", "fp16", 32, 640)


def test_cache_key_names_everything_and_changes_with_each_input() -> None:
    key = trtb.engine_cache_key(*BASE)
    assert key.startswith("5ea9b19c6c4d8904-nvidia_h200-sm90-trt10.9.0-fp16-b32-640-")
    assert key.endswith(".engine")
    variants = [
        ("f" * 64, *BASE[1:]),
        (SHA, "NVIDIA L4", *BASE[2:]),
        (SHA, "NVIDIA H200", (8, 9), *BASE[3:]),
        (*BASE[:3], "10.10.0", *BASE[4:]),
        (*BASE[:4], "int8", *BASE[5:]),
        (*BASE[:5], 16, 640),
        (*BASE[:6], 320),
    ]
    keys = {trtb.engine_cache_key(*v) for v in variants}  # type: ignore[arg-type]
    assert len(keys) == len(variants) and key not in keys
    with pytest.raises(ValueError, match="precision"):
        trtb.engine_cache_key(*BASE[:4], "fp8", *BASE[5:])  # type: ignore[arg-type]


def test_binding_shapes_resolve_dynamic_dimensions() -> None:
    inp = trtb.BindingSpec("images", True, (-1, 3, -1, -1), "HALF")
    out = trtb.BindingSpec("output0", False, (-1, 84, 8400), "FLOAT")
    assert trtb.resolve_shape(inp, 8, (640, 640)) == (8, 3, 640, 640)
    assert trtb.resolve_shape(out, 8, (640, 640)) == (8, 84, 8400)
    static = trtb.BindingSpec("images", True, (1, 3, 320, 320), "FLOAT")
    assert trtb.resolve_shape(static, 1, (320, 320)) == (1, 3, 320, 320)
    with pytest.raises(ModelError, match="static batch of 1"):
        trtb.resolve_shape(static, 4, (320, 320))
    with pytest.raises(ModelError, match="unknown dimensions"):
        trtb.resolve_shape(trtb.BindingSpec("o", False, (-1, -1), "FLOAT"), 2, (320, 320))


def test_buffer_plan_sizes_every_binding_for_the_max_batch() -> None:
    plan = trtb.plan_buffers(
        [
            trtb.BindingSpec("images", True, (-1, 3, 640, 640), "HALF"),
            trtb.BindingSpec("output0", False, (-1, 84, 8400), "FLOAT"),
        ],
        32,
        (640, 640),
    )
    assert plan.shapes == {"images": (32, 3, 640, 640), "output0": (32, 84, 8400)}
    assert plan.nbytes == {"images": 32 * 3 * 640 * 640 * 2, "output0": 32 * 84 * 8400 * 4}
    assert plan.total_bytes == sum(plan.nbytes.values())
    with pytest.raises(ModelError, match="1 input"):
        trtb.plan_buffers([trtb.BindingSpec("o", False, (1, 84, 8400), "FLOAT")], 1, (640, 640))
    with pytest.raises(ModelError, match="unsupported data type"):
        trtb.plan_buffers(
            [
                trtb.BindingSpec("images", True, (1, 3, 64, 64), "FP8"),
                trtb.BindingSpec("o", False, (1, 84, 84), "FLOAT"),
            ],
            1,
            (64, 64),
        )


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_without_tensorrt_loading_says_what_to_install(tmp_path: object) -> None:
    with pytest.raises(ModelError, match=r"needs tensorrt and cuda-python.*itsd\[gpu\]"):
        trtb.load(tmp_path / "m.engine", EngineOptions())  # type: ignore[operator]
