"""A fleet of edge servers sharing cameras through one Kafka consumer group.

* ``registry``: the camera registry topic (compacted; key = camera id, value = the
  camera's configuration as JSON, a tombstone removes it): validation, the writer used by
  ``itsd fleet apply`` and ``itsd streams add/remove --fleet``, and a reader of the
  whole topic.
* ``member``: what a node (``itsd start`` with ``fleet.enabled``) runs: a consumer of the
  registry topic in the fleet's group whose assigned partitions become cameras of the
  local supervisor, added and removed through its public methods; revoked partitions'
  cameras are detached (their events flushed) inside the revoke callback, before the
  rebalance completes.
* ``status``: node status records (a small compacted topic) and ``itsd fleet status``.

Kafka does the membership, failure detection and assignment; nothing here coordinates
on its own. This package must never import a stage, an engine, analytics, ``control``
or ``monitor``: it talks to the daemon only through ``Supervisor``'s public methods.
"""
