"""The package build's one hook: the phone app's runtime (web/build_app.py) is built before files are collected.

Everything else about the package is in pyproject.toml.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent / "web"))
import build_app  # noqa: E402


class BuildPyWithApp(build_py):
    """``build_py`` (also run by editable installs) after copying onnxruntime-web out of npm."""

    def run(self) -> None:
        try:
            build_app.build()
        except build_app.BuildError as err:
            sys.exit(f"error: {err}")
        super().run()


setup(cmdclass={"build_py": BuildPyWithApp})
