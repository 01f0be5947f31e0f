"""Which packages a build holds (everything else is in pyproject.toml).

The runtime package `gradshield_lint` is in every build. The research package `gradshield_research` (adapter
training, the refusal judge, the benchmarks) is part of a development install only: `pip install -e '.[dev]'`
(what `make setup` runs) maps it into the environment beside the runtime package, while a wheel or sdist
(`pip wheel .`, `python -m build`, `pip install .`) never holds it. setuptools builds an editable install with its
`editable_wheel` command, which is how the two are told apart.
"""

import sys

from setuptools import find_namespace_packages, setup

RUNTIME = find_namespace_packages(include=["gradshield_lint*"])
RESEARCH = find_namespace_packages(include=["gradshield_research*"])

setup(packages=RUNTIME + (RESEARCH if "editable_wheel" in sys.argv else []))
