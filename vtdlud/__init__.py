"""vtdlud: Intel VT-d IOMMU live-update state auditor."""

import sys
import types
from typing import Any

__version__ = "0.1.0"


class _Deferred(types.ModuleType):
    """Stands for a module until an attribute of it is first used, then imports it."""

    def __getattr__(self, name: str) -> Any:
        import importlib  # noqa: PLC0415

        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, name)


def _import_dataclasses() -> None:
    """``import dataclasses``, with its ``inspect`` deferred.  On Python 3.11 dataclasses
    imports inspect (with ast, dis, tokenize and linecache: ~6 ms of every cold start) for one
    use, the generated docstring of a dataclass that has none (``inspect.signature``); every
    class here is documented or gets its docstring from :func:`vtdlud.frozen.frozen`.  The stand-in is seen
    by dataclasses alone: it leaves ``sys.modules`` once dataclasses is imported, so every
    other ``import inspect`` is the real one."""
    if "dataclasses" in sys.modules or "inspect" in sys.modules:
        return
    stand_in = _Deferred("inspect")
    sys.modules["inspect"] = stand_in
    try:
        import dataclasses  # noqa: PLC0415, F401 - imported for the stand-in
    finally:
        if sys.modules.get("inspect") is stand_in:
            del sys.modules["inspect"]


# Before any module of the package imports dataclasses (they all import this package first).
_import_dataclasses()
