"""Run-time seams shared by the supervisor and the stages: the metric registry.

This package must never import a stage, the supervisor, ``control`` or ``monitor``.
"""
