"""Monitoring: the HTTP port with health, Prometheus metrics and the live dashboard.

This package must never import a stage or the supervisor; it reads a ControlBackend.
"""
