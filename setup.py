"""Build hook: compiles the tiny C extension that gives itsd real atomics.

Everything else about the package is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "itsd.shm._atomics",
            sources=["itsd/shm/_atomics.c"],
            extra_compile_args=["-O2", "-std=c11"],
        )
    ]
)
