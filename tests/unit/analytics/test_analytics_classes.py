"""COCO class table and the vehicle set."""

from __future__ import annotations

from itsd.analytics.classes import (
    COCO_NAMES,
    VEHICLE_CLASS_IDS,
    VEHICLE_CLASS_NAMES,
    class_name,
    is_vehicle,
)


def test_coco_table_has_80_unique_names_in_detector_order() -> None:
    assert len(COCO_NAMES) == 80
    assert len(set(COCO_NAMES)) == 80
    assert COCO_NAMES[:8] == (
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "airplane",
        "bus",
        "train",
        "truck",
    )
    assert COCO_NAMES[9] == "traffic light"
    assert COCO_NAMES[79] == "toothbrush"


def test_vehicles_are_road_vehicles_only() -> None:
    assert frozenset({"car", "motorcycle", "bus", "truck"}) == VEHICLE_CLASS_NAMES
    assert frozenset({2, 3, 5, 7}) == VEHICLE_CLASS_IDS
    assert is_vehicle("car")
    assert is_vehicle("truck")
    assert not is_vehicle("bicycle")
    assert not is_vehicle("train")
    assert not is_vehicle("person")
    assert not is_vehicle("Car")


def test_class_name_falls_back_for_unknown_ids() -> None:
    assert class_name(2) == "car"
    assert class_name(80) == "class_80"
    assert class_name(-1) == "class_-1"
    assert class_name(1, ("a", "b")) == "b"


def test_vehicle_types_of_the_traffic_classes() -> None:
    from itsd.analytics.classes import TRAFFIC_CLASS_NAMES, vehicle_type

    assert {
        "car",
        "truck",
        "bus",
        "motorcycle",
        "bicycle",
        "person",
    } == TRAFFIC_CLASS_NAMES
    assert vehicle_type("car") == "VEHICLE_TYPE_CAR"
    assert vehicle_type("truck") == "VEHICLE_TYPE_TRUCK"
    assert vehicle_type("bus") == "VEHICLE_TYPE_BUS"
    assert vehicle_type("motorcycle") == "VEHICLE_TYPE_MOTORCYCLE"
    assert vehicle_type("bicycle") == "VEHICLE_TYPE_BICYCLE"
    assert vehicle_type("person") == "VEHICLE_TYPE_UNSPECIFIED"
    assert vehicle_type("train") == "VEHICLE_TYPE_UNSPECIFIED"
