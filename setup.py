"""Build the optional compiled core (``geofence/_core.c``); all metadata is in pyproject.toml.

The extension is built when a C compiler and the Python headers are present. When
they are not, the build prints one line and goes on: geofence then runs on its
pure-Python core, with the same answers (``geofence.core_info()`` says which is active).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

#: Reviewed data kept in data/ beside the recipe, shipped inside the package
#: (geofence/_data/) so that an installed geofence finds them without a checkout.
PACKAGED_DATA = ("data/territories.toml",)


class BuildPyWithData(build_py):
    """``build_py`` that also copies :data:`PACKAGED_DATA` into ``geofence/_data``."""

    def run(self) -> None:
        """Build the Python packages, then add the reviewed data files."""
        super().run()
        target = Path(self.build_lib) / "geofence" / "_data"
        target.mkdir(parents=True, exist_ok=True)
        for name in PACKAGED_DATA:
            shutil.copyfile(name, target / Path(name).name)


class OptionalBuildExt(build_ext):
    """``build_ext`` that turns a missing compiler or a failed compile into a notice."""

    def run(self) -> None:
        """Build the extensions; a missing compiler becomes a notice."""
        try:
            super().run()
        except Exception as exc:  # no compiler at all: distutils raises from run()
            self._notice(exc)

    def build_extension(self, ext: Extension) -> None:
        """Build one extension; a failed compile becomes a notice."""
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._notice(exc)

    @staticmethod
    def _notice(exc: BaseException) -> None:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(
            f"geofence: compiled core not built ({reason}); using the pure-Python core",
            file=sys.stderr,
        )


setup(
    # geofence._data.policies is data/policies (see [tool.setuptools.package-dir]).
    packages=[*find_packages(include=["geofence", "geofence.*"]), "geofence._data.policies"],
    ext_modules=[
        Extension(
            "geofence._core",
            sources=["geofence/_core.c"],
            optional=True,
            extra_compile_args=["-O2"] if sys.platform != "win32" else [],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithData},
)
