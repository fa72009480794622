"""The 1.1 additions: speed, heading and vehicle type; interval summaries; alert pairs."""

from __future__ import annotations

import json

import jsonschema
import pytest

from itsd.events import (
    SCHEMA_VERSION,
    alert_event,
    analytics_summary_event,
    detection_event,
    detection_item,
    line_crossing_event,
    load_schema,
)

NS = 1_800_000_060_000_000_000


def valid(rec: object) -> dict[str, object]:
    obj = json.loads(rec.payload)  # type: ignore[attr-defined]
    jsonschema.validate(obj, load_schema(obj["event_type"]))
    return obj  # type: ignore[no-any-return]


def test_version_is_1_1_or_later() -> None:
    major, minor = (int(v) for v in SCHEMA_VERSION.split("."))
    assert major == 1 and minor >= 1


def test_detection_with_speed_heading_and_vehicle_type() -> None:
    item = detection_item("car", 0.9, (1, 2, 3, 4), 7, True, "VEHICLE_TYPE_CAR", 48.26, "north")
    assert item["vehicle_type"] == "VEHICLE_TYPE_CAR"
    assert item["speed_kmh"] == 48.3 and item["heading"] == "north"
    bare = detection_item("person", 0.9, (1, 2, 3, 4), None, False, "VEHICLE_TYPE_UNSPECIFIED")
    assert "speed_kmh" not in bare and "heading" not in bare
    valid(detection_event("c", 1, NS, [item, bare], 640, 360, 1.0, 2.0, 1))


def test_line_crossing_speed_is_null_when_unknown() -> None:
    args = ("c", 1, NS, "mid", "in", "car", 7, True, (1.0, 2.0), {"in": {"car": 1}, "out": {}})
    known = valid(line_crossing_event(*args, "VEHICLE_TYPE_CAR", 52.04, "south_west"))
    assert known["data"]["speed_kmh"] == 52.0  # type: ignore[index]
    assert known["data"]["heading"] == "south_west"  # type: ignore[index]
    unknown = valid(line_crossing_event(*args, "VEHICLE_TYPE_CAR", None, "image_left"))
    assert unknown["data"]["speed_kmh"] is None  # type: ignore[index]


def test_interval_summary_shape() -> None:
    obj = valid(
        analytics_summary_event(
            "c",
            NS,
            60.0,
            600,
            3,
            {"mid": {"in": {"car": 9}, "out": {}}},
            interval=(1_800_000_000.0, 1_800_000_060.0),
            interval_counts={"mid": {"in": {"car": 2}}},
            speed={
                "samples": 2,
                "mean_kmh": 45.0,
                "p85_kmh": 49.5,
                "histogram": {"bin_kmh": 5, "counts": [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]},
            },
            zones={
                "lane": {
                    "occupancy_mean": 1.5,
                    "occupied_fraction": 0.8,
                    "dwell_mean_s": None,
                    "queue_max_m": 22.0,
                }
            },
            longest_queue_m=22.0,
        )
    )
    data = obj["data"]
    assert data["interval"] == {  # type: ignore[index]
        "start": "2027-01-15T08:00:00.000Z",
        "end": "2027-01-15T08:01:00.000Z",
        "seconds": 60.0,
    }
    assert data["interval_counts"] == {"mid": {"in": {"car": 2}}}  # type: ignore[index]
    assert data["longest_queue_m"] == 22.0  # type: ignore[index]


def test_summary_without_interval_stays_1_0_shaped() -> None:
    obj = valid(analytics_summary_event("c", NS, 60.0, 10, 0, {}))
    assert "interval" not in obj["data"]  # type: ignore[operator]


def test_alert_pair() -> None:
    raised = valid(
        alert_event(
            "ALERT_TYPE_WRONG_WAY",
            "ALERT_SEVERITY_CRITICAL",
            "track 7 drives south",
            camera_id="c",
            tracking_id=7,
            zone_id="lane",
            state="raised",
            alert_id="c:wrong_way:lane:7@1.000",
            evidence={"track_ids": [7], "distance_m": 12.0, "min_distance_m": 10.0},
            snapshot_path="snaps/c/x.jpg",
        )
    )
    assert raised["data"]["state"] == "raised"  # type: ignore[index]
    valid(
        alert_event(
            "ALERT_TYPE_CAMERA_BLIND",
            "ALERT_SEVERITY_WARNING",
            "cleared: the picture changes again",
            camera_id="c",
            state="cleared",
            alert_id="c:blind:frozen@1.000",
        )
    )
    with pytest.raises(ValueError, match="state"):
        alert_event("ALERT_TYPE_CONGESTION", "ALERT_SEVERITY_INFO", "x", state="over")


#: Events as released in schema 1.1 (the analytics additions); every later 1.x schema
#: must still accept them.
RELEASED_1_1 = [
    '{"event_type":"line_crossing","schema_version":"1.1","timestamp":"2026-11-29T22:56:07.123Z",'
    '"camera_id":"dusk","frame_id":139,"data":{"line_id":"mid","direction":"in",'
    '"class_name":"car","tracking_id":11,"is_vehicle":true,"position":{"x":320.0,"y":30.5},'
    '"line_totals":{"in":{"car":1},"out":{"car":5}},"speed_kmh":64.4,'
    '"vehicle_type":"VEHICLE_TYPE_CAR","heading":"west"}}',
    '{"event_type":"analytics_summary","schema_version":"1.1","timestamp":"2026-11-29T22:56:10.000Z",'
    '"camera_id":"dusk","frame_id":0,"data":{"period_s":5.0,"frames":120,"vehicles_in_view":3,'
    '"line_totals":{"mid":{"in":{"car":1},"out":{"car":5}}},"interval":{"start":'
    '"2026-11-29T22:56:05.000Z","end":"2026-11-29T22:56:10.000Z","seconds":5.0},'
    '"interval_counts":{"mid":{"out":{"car":5},"in":{"car":1}}},"speed":{"samples":7,'
    '"mean_kmh":32.8,"p85_kmh":34.5,"histogram":{"bin_kmh":5,"counts":[0,0,0,0,2,2,2,0,0,0,'
    '0,0,1]}},"zones":{"eastbound":{"occupancy_mean":3.483,"occupied_fraction":1.0,'
    '"dwell_mean_s":1.4,"queue_max_m":0.0}},"longest_queue_m":0.0}}',
    '{"event_type":"alert","schema_version":"1.1","timestamp":"2026-11-29T23:23:26.486Z",'
    '"camera_id":"dusk","frame_id":139,"data":{"alert_type":"ALERT_TYPE_SPEEDING",'
    '"severity":"ALERT_SEVERITY_WARNING","tracking_id":11,"zone_id":"westbound",'
    '"message":"track 11 at 64 km/h in zone westbound (limit 40 km/h)","speed_kmh":64.4,'
    '"state":"raised","alert_id":"dusk:speeding:westbound:11@1795994606.486","evidence":'
    '{"track_ids":[11],"speed_kmh":64.4,"limit_kmh":40.0},"snapshot_path":"s/dusk/a.jpg"}}',
]


@pytest.mark.parametrize("raw", RELEASED_1_1)
def test_released_1_1_events_stay_valid(raw: str) -> None:
    obj = json.loads(raw)
    jsonschema.validate(obj, load_schema(obj["event_type"]))
