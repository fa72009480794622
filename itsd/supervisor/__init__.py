"""Supervisor: spawns the stage processes, watches them, restarts them and stops them.

This package must never import a stage module or move frame pixels.
"""
