"""Error types and process exit codes shared by every part of itsd.

Exit codes are the contract between a stage process and the supervisor (and between the
daemon and systemd): the supervisor reads a child's exit code to decide whether a restart
can help. This module must never import anything else from itsd.
"""

from __future__ import annotations

#: Clean exit (a stage drained and stopped on request).
EXIT_OK = 0
#: Unexpected failure: a restart may help.
EXIT_FAILURE = 1
#: Bad configuration or a missing/unusable model: a restart cannot help, so the
#: supervisor stops the daemon instead of restart-looping (sysexits EX_CONFIG).
EXIT_CONFIG = 78
# A source that cannot be opened in a run that ends with its sources (sysexits EX_NOINPUT).
EXIT_NO_INPUT = 66
#: The daemon could not get a resource it needs (shared memory, a port): EX_UNAVAILABLE.
EXIT_UNAVAILABLE = 69


class ItsdError(Exception):
    """Base class of the errors itsd raises on purpose, with a message for a person."""

    exit_code = EXIT_FAILURE


class ConfigError(ItsdError):
    """The configuration is invalid; the message names the file, the key and what was expected."""

    exit_code = EXIT_CONFIG


class ModelError(ItsdError):
    """The model cannot be found, fetched or loaded; the message says how to supply one."""

    exit_code = EXIT_CONFIG


class SourceError(ItsdError):
    """A camera or video source cannot be opened or read (the message names the camera)."""


class ResourceError(ItsdError):
    """A system resource is short (shared memory, disk, a port)."""

    exit_code = EXIT_UNAVAILABLE
