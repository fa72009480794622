"""Pipeline stages, one module each (decode, infer, analyze, publish) plus their harness.

A stage imports ``shm``, ``records``, ``config`` and its own domain package only; never
``control``, ``monitor``, ``cli`` or another stage.
"""
