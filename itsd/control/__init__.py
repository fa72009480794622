"""The gRPC control API of itsd (proto/itsd/v1): servicers, server, client, event schema.

Modules: ``backend`` (what the API needs from the daemon, as plain data), ``servicers``
(snapshots -> protobuf), ``frames`` (the frame RPCs) over ``push`` (frames into push
cameras' rings, results back from the results ring), ``auth`` (bearer tokens, also for
the HTTP port), ``server`` (``start_control_server``: limits, TLS, tokens), ``client``
(typed calls for the CLI), ``events`` (parse published JSON events into
``itsd.v1.Event``). The
generated protobuf and gRPC code lives in ``_pb`` and is written only by
``tools/gen_proto.py``.

This package learns the daemon's state only through a ``ControlBackend``; it must never
import a stage, an engine, analytics, the monitor or the CLI. Importing the package
itself must stay cheap: it imports no submodule (and so neither grpc nor protobuf).
"""
