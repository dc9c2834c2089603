"""``@frozen`` behaves as ``@dataclass(frozen=True)``: each shape of class is declared twice, once
with each decorator, and the two are compared on the same values."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import KW_ONLY, FrozenInstanceError, dataclass, field
from typing import Any, Generic, TypeVar

import pytest

from vtdlud.frozen import frozen, is_frozen

T = TypeVar("T")
Decorator = Callable[[type], type]
STDLIB: Decorator = dataclass(frozen=True)
DECORATORS = pytest.mark.parametrize("make", [STDLIB, frozen], ids=["dataclass", "frozen"])


def shapes(make: Decorator) -> dict[str, type]:
    """The same class bodies under one decorator."""

    class Plain:
        a: int
        b: str

    class Defaults:
        """Documented."""

        a: int
        b: int = 7
        c: tuple[int, ...] = field(default_factory=tuple)
        d: list[int] = field(default_factory=list, compare=False, repr=False)

    class KwOnly:
        a: int
        _: KW_ONLY
        b: int = 1
        c: int = 2

    class NotInit:
        a: int
        b: int = field(default=5, init=False)
        c: tuple[int, ...] = field(default_factory=lambda: (1,), init=False)

    class Empty:
        pass

    class Single:
        a: int

    class Gen(Generic[T]):
        item: T

    class OwnEq:
        a: int
        b: int

        def __eq__(self, other: object) -> bool:
            return isinstance(other, OwnEq) and self.a == other.a

        def __hash__(self) -> int:
            return hash(self.a)

    class HashOff:
        a: int
        b: int = field(hash=False)

    base = make(type("Base", (), {"__annotations__": {"a": "int"}}))
    child = make(type("Child", (base,), {"__annotations__": {"b": "int"}, "__module__": __name__}))
    made = {c.__name__: make(c) for c in (Plain, Defaults, KwOnly, NotInit, Empty, Single, Gen)}
    made.update(OwnEq=make(OwnEq), HashOff=make(HashOff), Child=child)
    return made


STD = shapes(STDLIB)
OURS = shapes(frozen)
ARGS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "Plain": ((1, "x"), {}),
    "Defaults": ((1,), {"c": (2, 3)}),
    "KwOnly": ((1,), {"c": 9}),
    "NotInit": ((4,), {}),
    "Empty": ((), {}),
    "Single": ((3,), {}),
    "Gen": (("item",), {}),
    "OwnEq": ((1, 2), {}),
    "HashOff": ((1, 2), {}),
    "Child": ((1, 2), {}),
}


def _state(obj: object) -> dict[str, Any]:
    return dict(vars(obj))


@pytest.mark.parametrize("name", sorted(ARGS))
def test_same_as_dataclass(name: str) -> None:
    args, kwargs = ARGS[name]
    std, ours = STD[name](*args, **kwargs), OURS[name](*args, **kwargs)
    assert _state(ours) == _state(std)
    assert repr(ours) == repr(std)
    assert hash(ours) == hash(std)  # the same tuple is hashed: sets iterate in the same order
    assert ours == OURS[name](*args, **kwargs)
    assert (ours == std) is False  # another class: NotImplemented both ways
    assert [f.name for f in dataclasses.fields(ours)] == [f.name for f in dataclasses.fields(std)]
    assert getattr(OURS[name], "__match_args__") == getattr(STD[name], "__match_args__")  # noqa: B009
    assert dataclasses.is_dataclass(ours) and is_frozen(type(ours)) and is_frozen(type(std))
    sig_std = inspect.signature(STD[name]).parameters
    sig_ours = inspect.signature(OURS[name]).parameters
    assert [(p.name, p.kind, p.default is p.empty) for p in sig_ours.values()] == [
        (p.name, p.kind, p.default is p.empty) for p in sig_std.values()
    ]


@DECORATORS
def test_frozen_refuses_changes(make: Decorator) -> None:
    obj = shapes(make)["Plain"](1, "x")
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'a'"):
        obj.a = 2
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'new'"):
        obj.new = 2
    with pytest.raises(FrozenInstanceError, match="cannot delete field 'a'"):
        del obj.a


def test_differences_in_values_count() -> None:
    cls = OURS["Defaults"]
    assert cls(1) == cls(1, 7, ())
    assert cls(1) != cls(2)
    assert cls(1, d=[1]) == cls(1, d=[2])  # compare=False
    assert cls(1).c == () and cls(1).d == [] and cls(1).d is not cls(1).d  # a new list each time
    assert len({OURS["HashOff"](1, 2), OURS["HashOff"](1, 3)}) == 2  # equal hashes, unequal


def test_own_eq_and_hash_kept() -> None:
    cls = OURS["OwnEq"]
    assert cls(1, 2) == cls(1, 3) and hash(cls(1, 2)) == hash(1)


@frozen
class Pickled:
    a: int
    c: tuple[int, ...] = field(default_factory=tuple)


def test_replace_fields_and_pickle() -> None:
    obj = Pickled(1, (3,))
    assert dataclasses.replace(obj, a=5) == Pickled(5, (3,))
    assert pickle.loads(pickle.dumps(obj)) == obj
    assert dataclasses.asdict(obj) == {"a": 1, "c": (3,)}


def test_missing_and_unknown_arguments() -> None:
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'b'"):
        OURS["Plain"](1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        OURS["Plain"](1, "x", z=3)
    with pytest.raises(TypeError, match="positional"):
        OURS["KwOnly"](1, 2)


def test_post_init_runs() -> None:
    seen: list[int] = []

    @frozen
    class Checked:
        a: int

        def __post_init__(self) -> None:
            seen.append(self.a)

    Checked(4)
    assert seen == [4]


def test_docstring() -> None:
    assert OURS["Defaults"].__doc__ == "Documented."
    assert OURS["Plain"].__doc__ == "Plain(a, b)"


def test_own_setattr_refused() -> None:
    with pytest.raises(TypeError, match="cannot define __setattr__"):

        @frozen
        class Bad:
            a: int

            def __setattr__(self, name: str, value: object) -> None:
                pass


def test_dataclasses_imported_without_inspect() -> None:
    """vtdlud.frozen imports dataclasses with its one use of inspect deferred (cold start):
    inspect is not imported, yet a dataclass without a docstring still gets dataclasses' own
    (the deferred module loads on first use), and a later ``import inspect`` is the real one."""
    code = (
        "import sys, vtdlud.frozen, dataclasses\n"
        "assert 'inspect' not in sys.modules, 'inspect imported'\n"
        "@dataclasses.dataclass\n"
        "class A:\n"
        "    x: int\n"
        "assert A.__doc__ == 'A(x: int)', A.__doc__\n"
        "import inspect\n"
        "assert type(inspect).__name__ == 'module' and inspect.signature(A)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
