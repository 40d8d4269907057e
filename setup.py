"""The optional C hot path of the tracer (tracer/_speedups.c); everything else is in
pyproject.toml. ``optional=True``: without a compiler the install goes on and the
tracer runs its pure-Python hooks."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tracer._speedups", ["tracer/_speedups.c"], optional=True)])
