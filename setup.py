"""The optional C part of `verify`'s fast check (`domain/_fastcheck.c`).

Built with the package when a C compiler and OpenSSL's headers are there;
without them the build skips it and `domain.integrity` checks in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "domain._fastcheck",
            sources=["domain/_fastcheck.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
