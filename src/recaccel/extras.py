"""Optional extras: packages only one verb or backend needs, imported when it runs.

The core install (`pip install recaccel`) trains, optimizes, profiles, serves and benchmarks.
Ray, Triton's gRPC client and OpenVINO are extras (pyproject.toml's optional dependencies), so
no module imports them at load; the code that needs one calls `require`, which imports it or
fails with a `MissingExtraError` naming the verb and the command that installs the extra:

    serve = require(RAY, "ray.serve")

>>> print(MissingExtraError(RAY))
`recaccel deploy ray` needs Ray Serve, which is not installed
Hint: pip install 'recaccel[ray]'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from recaccel.errors import RecaccelError


@dataclass(frozen=True)
class Extra:
    """One of pyproject.toml's optional dependency groups."""

    name: str  # as in `pip install 'recaccel[name]'`
    package: str  # what the user knows it as
    needed_by: str  # the verb or backend that needs it

    @property
    def install(self) -> str:
        return f"pip install 'recaccel[{self.name}]'"


RAY = Extra("ray", "Ray Serve", "`recaccel deploy ray`")
TRITON = Extra("triton", "Triton's client (tritonclient[grpc])", "`recaccel deploy triton`")
OPENVINO = Extra("openvino", "OpenVINO", "the openvino backend")
EXTRAS = {extra.name: extra for extra in (RAY, TRITON, OPENVINO)}


class MissingExtraError(RecaccelError):
    """A verb or backend needs a package that only an extra installs."""

    def __init__(self, extra: Extra) -> None:
        super().__init__(
            f"{extra.needed_by} needs {extra.package}, which is not installed", extra.install
        )
        self.extra = extra


def require(extra: Extra, module: str) -> ModuleType:
    """`module` (a package of `extra`) imported, or a MissingExtraError saying which extra
    to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(extra) from None
