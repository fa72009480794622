"""Build hook: compiles the small C extensions: real atomics, the record ring's and
the event records' batch reads (the publisher's hot path), and the decode worker's copy
of picture planes into frame ring slots.

Everything else about the package is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "itsd.shm._atomics",
            sources=["itsd/shm/_atomics.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
        Extension(
            "itsd.shm._ringread",
            sources=["itsd/shm/_ringread.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
        Extension(
            "itsd._records",
            sources=["itsd/_records.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
        Extension(
            "itsd.sources._planecopy",
            sources=["itsd/sources/_planecopy.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
    ]
)
