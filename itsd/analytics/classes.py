"""Class names of the detector (COCO, as YOLO11 is trained) and which of them are vehicles.

Analytics refers to classes by name in configuration and events, and by id in the arrays
it receives from inference; this module is the single place that maps one to the other.
It must never import anything else from itsd, nor know about a particular model file.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The 80 COCO class names in the order of the detector's class ids (0 person, 1 bicycle, ...).
COCO_NAMES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

#: Road vehicles. Bicycles are not vehicles here (they are counted as their own class) and
#: trains are left out because a rail line is not a road lane.
VEHICLE_CLASS_NAMES: frozenset[str] = frozenset({"car", "motorcycle", "bus", "truck"})

#: The COCO ids of :data:`VEHICLE_CLASS_NAMES`.
VEHICLE_CLASS_IDS: frozenset[int] = frozenset(
    i for i, name in enumerate(COCO_NAMES) if name in VEHICLE_CLASS_NAMES
)


def is_vehicle(class_name: str) -> bool:
    """Whether ``class_name`` is a road vehicle (car, motorcycle, bus, truck)."""
    return class_name in VEHICLE_CLASS_NAMES


def class_name(class_id: int, names: Sequence[str] = COCO_NAMES) -> str:
    """The name of ``class_id`` in ``names``; ``"class_<id>"`` for an id outside the table.

    A model with more classes than its name table must not crash analytics, so unknown ids
    get a stable placeholder name instead of an error.
    """
    if 0 <= class_id < len(names):
        return names[class_id]
    return f"class_{class_id}"


#: The classes analytics reports as kinds of road user, and their ``vehicle_type`` in
#: events (the ``VehicleType`` enum of proto/itsd/v1/common.proto). People and every other
#: class are ``VEHICLE_TYPE_UNSPECIFIED``.
VEHICLE_TYPES: dict[str, str] = {
    "car": "VEHICLE_TYPE_CAR",
    "truck": "VEHICLE_TYPE_TRUCK",
    "bus": "VEHICLE_TYPE_BUS",
    "motorcycle": "VEHICLE_TYPE_MOTORCYCLE",
    "bicycle": "VEHICLE_TYPE_BICYCLE",
}
#: The road-user classes of traffic analytics (what counting lines count by default).
TRAFFIC_CLASS_NAMES: frozenset[str] = frozenset({*VEHICLE_TYPES, "person"})


def vehicle_type(class_name: str) -> str:
    """The event ``vehicle_type`` of a class name (``VEHICLE_TYPE_UNSPECIFIED`` if none)."""
    return VEHICLE_TYPES.get(class_name, "VEHICLE_TYPE_UNSPECIFIED")
