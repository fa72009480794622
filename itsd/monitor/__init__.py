"""Monitoring: the HTTP port with health, Prometheus metrics and the live dashboard.

This package must never import a stage, an engine or the supervisor, and never write to
shared memory. It reads a ControlBackend and the supervisor's state snapshot, and for the
dashboard's pictures copies frames out of the frame rings with a read-only peek.
"""
