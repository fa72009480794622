"""The node's bookkeeping: assignments become camera changes, revocations wait for the
removals, capacity, refused cameras, the status record and ``fleet status``.

A stand-in for the supervisor records the calls (the real path is in
``tests/integration/fleet``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

from confluent_kafka import TopicPartition

from itsd.config import CameraConfig, Config, parse_config
from itsd.fleet.member import Cameras, FleetMember, plan_changes
from itsd.fleet.registry import Registry, encode
from itsd.fleet.status import format_status, summarize

PATTERN = "pattern://moving?width=160&height=120&fps=2"


def cam(cid: str, **kw: object) -> CameraConfig:
    return CameraConfig.model_validate({"id": cid, "source": PATTERN, **kw})


class Host:
    """Records calls; changes resolve at once unless ``hold`` is set."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = False
        self.ready_sent = True
        self.calls: list[tuple[str, str]] = []
        self.hold = False
        self.held: list[Future[Any]] = []
        self.refuse: set[str] = set()

    def _fut(self, value: Any, err: Exception | None = None) -> Future[Any]:
        f: Future[Any] = Future()
        if self.hold:
            self.held.append(f)
            return f
        f.set_running_or_notify_cancel()
        if err is not None:
            f.set_exception(err)
        else:
            f.set_result(value)
        return f

    def add_camera(self, cfg: CameraConfig, origin: str = "", persist: bool = True) -> Future[Any]:
        assert origin == "fleet" and persist is False
        self.calls.append(("add", cfg.id))
        if cfg.id in self.refuse:
            return self._fut(None, ValueError(f"camera {cfg.id!r} is already registered"))
        return self._fut(cfg.id)

    def remove_camera(self, camera_id: str, persist: bool = True) -> Future[Any]:
        assert persist is False
        self.calls.append(("remove", camera_id))
        return self._fut(True)

    def update_camera(self, cfg: CameraConfig) -> Future[Any]:
        self.calls.append(("update", cfg.id))
        return self._fut(True)


class Msg:
    def __init__(self, part: int, key: str, value: bytes | None) -> None:
        self._p, self._k, self._v = part, key.encode(), value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._p

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes | None:
        return self._v


class Consumer:
    def __init__(self) -> None:
        self.assigned: set[int] = set()

    def incremental_assign(self, parts: list[TopicPartition]) -> None:
        self.assigned |= {p.partition for p in parts}

    def incremental_unassign(self, parts: list[TopicPartition]) -> None:
        self.assigned -= {p.partition for p in parts}


def member(capacity: int | None = None, **fleet: Any) -> tuple[FleetMember, Host, Consumer]:
    cfg = parse_config({"fleet": {"enabled": True, "node_id": "n1", "capacity": capacity, **fleet}})
    host = Host(cfg)
    consumer = Consumer()
    return FleetMember(host, consumer=consumer), host, consumer


def tps(*parts: int) -> list[TopicPartition]:
    return [TopicPartition("itsd.cameras", p) for p in parts]


def test_assigned_partitions_are_read_from_the_start_and_their_last_records_run() -> None:
    m, host, consumer = member()
    parts = tps(0, 1)
    m._on_assign(consumer, parts)
    assert consumer.assigned == {0, 1}
    assert all(p.offset == -2 for p in parts)  # OFFSET_BEGINNING
    for msg in (
        Msg(0, "a", encode(cam("a"))),
        Msg(0, "b", encode(cam("b"))),
        Msg(1, "c", encode(cam("c"))),
        Msg(0, "b", None),  # tombstone: b never starts
        Msg(1, "c", encode(cam("c", priority=9))),  # the last config wins
        Msg(5, "z", encode(cam("z"))),  # a partition not (or no longer) ours
    ):
        m._record(msg)
    m.reconcile()
    assert sorted(host.calls) == [("add", "a"), ("add", "c")]
    assert m.book.running["c"].priority == 9
    rec = m.status_record()
    assert rec["cameras"] == ["a", "c"] and rec["partitions"] == [0, 1]
    assert rec["load"] == {"cameras": 2, "fps": 60.0}  # 2 x performance.target_fps
    assert rec["node"] == "n1"

    host.calls.clear()
    m._record(Msg(1, "c", encode(cam("c", priority=3))))
    m._record(Msg(0, "a", None))
    m.reconcile()
    assert host.calls == [("remove", "a"), ("update", "c")]


def test_revocation_removes_and_waits_for_the_removals() -> None:
    m, host, consumer = member()
    m._on_assign(consumer, tps(0, 1))
    m._record(Msg(0, "a", encode(cam("a"))))
    m._record(Msg(1, "b", encode(cam("b"))))
    m.reconcile()
    host.calls.clear()
    host.hold = True
    done = threading.Event()

    def revoke() -> None:
        m._on_revoke(consumer, tps(0))
        done.set()

    t = threading.Thread(target=revoke)
    t.start()
    time.sleep(0.3)
    assert host.calls == [("remove", "a")]
    assert not done.is_set()  # the rebalance waits for the camera's events
    host.held[0].set_result(True)
    assert done.wait(5)
    t.join()
    assert consumer.assigned == {1} and set(m.book.running) == {"b"}
    assert m.rebalances[-1][1:] == ("revoke", 1)


def test_revocation_is_bounded() -> None:
    m, host, consumer = member(revoke_timeout_s=0.3)
    m._on_assign(consumer, tps(0))
    m._record(Msg(0, "a", encode(cam("a"))))
    m.reconcile()
    host.hold = True
    t0 = time.monotonic()
    m._on_revoke(consumer, tps(0))
    assert time.monotonic() - t0 < 2.0 and consumer.assigned == set()


def test_an_add_not_started_yet_is_cancelled_on_revocation() -> None:
    m, host, consumer = member()
    host.hold = True
    m._on_assign(consumer, tps(0))
    m._record(Msg(0, "a", encode(cam("a"))))
    m.reconcile()
    assert host.calls == [("add", "a")]
    m._on_revoke(consumer, tps(0))
    assert host.held[0].cancelled()
    assert host.calls == [("add", "a")] and not m.book.running


def test_capacity_keeps_running_cameras_then_priority() -> None:
    book = Cameras()
    book.owned = {0: {c: cam(c) for c in ("a", "b", "c")}, 1: {"d": cam("d", priority=9)}}
    add, _, _, waiting = plan_changes(book, 2)
    assert [c.id for c in add] == ["d", "a"] and waiting == ["b", "c"]
    book.running = {"b": cam("b"), "c": cam("c")}
    add, _, remove, waiting = plan_changes(book, 2)
    assert not add and not remove and waiting == ["d", "a"]  # nothing running is pushed out


def test_waiting_cameras_start_when_capacity_frees() -> None:
    m, host, consumer = member(capacity=1)
    m._on_assign(consumer, tps(0))
    m._record(Msg(0, "a", encode(cam("a"))))
    m._record(Msg(0, "b", encode(cam("b"))))
    m.reconcile()
    assert host.calls == [("add", "a")] and m.status_record()["waiting"] == ["b"]
    m._record(Msg(0, "a", None))
    m.reconcile()
    assert host.calls[1:] == [("remove", "a"), ("add", "b")]


def test_a_refused_camera_is_reported_and_tried_again_with_a_new_config() -> None:
    m, host, consumer = member()
    host.refuse = {"a"}
    m._on_assign(consumer, tps(0))
    m._record(Msg(0, "a", encode(cam("a"))))
    m.reconcile()
    m.reconcile()
    assert host.calls == [("add", "a")]
    assert "already registered" in m.status_record()["failed"]["a"]
    host.refuse = set()
    m._record(Msg(0, "a", encode(cam("a", priority=8))))
    m.reconcile()
    assert host.calls[-1] == ("add", "a") and m.status_record()["cameras"] == ["a"]


def test_status_lists_nodes_and_the_cameras_nobody_runs() -> None:
    now = 1000.0
    reg = Registry(8, {c: (i, cam(c)) for i, c in enumerate(("a", "b", "c", "d", "e"))})
    nodes = {
        "n1": {"time": now - 1, "state": "running", "interval_s": 5, "cameras": ["a"],
               "waiting": ["b"], "capacity": 1, "partitions": [0, 1], "load": {"fps": 2.0},
               "lag": 0},
        "n2": {"time": now - 60, "state": "running", "interval_s": 5, "cameras": ["c"]},
        "n3": {"time": now - 2, "state": "running", "interval_s": 5, "cameras": ["x"],
               "failed": {"d": "ValueError: taken"}},
        "n4": {"time": now - 9, "state": "stopped", "interval_s": 5, "cameras": []},
    }  # fmt: skip
    st = summarize(reg, nodes, now)
    states = {n["node"]: n["state"] for n in st["nodes"]}
    assert states == {"n1": "running", "n2": "gone", "n3": "running", "n4": "stopped"}
    reasons = {c["camera"]: c["reason"] for c in st["not_running"]}
    assert set(reasons) == {"b", "c", "d", "e"}
    assert reasons["b"].startswith("waiting on n1")
    assert reasons["d"] == "refused by n3: ValueError: taken"
    assert reasons["c"].startswith("no node runs it")
    assert st["not_in_registry"] == ["x"]
    text = format_status(st)
    assert "n1" in text and "not running (4):" in text and "waiting on n1" in text


class EagerConsumer(Consumer):
    def assign(self, parts: list[TopicPartition]) -> None:
        self.assigned = {p.partition for p in parts}

    def unassign(self) -> None:
        self.assigned = set()


def test_eager_assignors_give_up_everything_on_each_rebalance() -> None:
    cfg = parse_config({"fleet": {"enabled": True, "node_id": "n1", "assignor": "range"}})
    host = Host(cfg)
    consumer = EagerConsumer()
    m = FleetMember(host, consumer=consumer)
    m._on_assign(consumer, tps(0, 1))
    m._record(Msg(0, "a", encode(cam("a"))))
    m._record(Msg(1, "b", encode(cam("b"))))
    m.reconcile()
    m._on_revoke(consumer, tps(0, 1))
    assert consumer.assigned == set() and not m.book.running
    assert sorted(host.calls[2:]) == [("remove", "a"), ("remove", "b")]
    m._on_assign(consumer, tps(1))
    assert consumer.assigned == {1} and list(m.book.owned) == [1]
