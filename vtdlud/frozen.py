"""``@frozen``: a frozen dataclass that costs about a third as much to define.

``@dataclass(frozen=True)`` on Python 3.11 compiles six functions per class from generated source
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``) and calls
``inspect.signature`` for a class without a docstring: about 0.55 ms a class, 65 ms for the ~130
frozen dataclasses of this package, two thirds of its import time and so of every cold
``vtdlud status`` and ``vtdlud check`` (benchmarks/RESULTS.md).  ``@frozen``: ~0.17 ms a class.

``@frozen`` lets :func:`dataclasses.dataclass` collect the fields (so ``dataclasses.fields``,
``replace``, ``is_dataclass`` and ``__match_args__`` behave as for any dataclass), compiles only
``__init__``, and gives the rest as closures over the field names that need no compiling.  What
an instance does is what ``@dataclass(frozen=True)`` gives it:

- ``__init__``: the same parameters (positional, defaults, ``default_factory``, ``init=False``
  fields, ``kw_only`` fields after ``*``) and the same ``__post_init__`` call; values are stored
  in the instance ``__dict__`` (what ``object.__setattr__`` does for a class without slots);
- ``__eq__``: same class and equal tuples of the ``compare`` fields, else ``NotImplemented``;
- ``__hash__``: the hash of that same tuple, so sets iterate in the same order;
- ``__repr__``: ``Name(field=value, ...)`` over the ``repr`` fields;
- assigning or deleting any attribute raises :class:`dataclasses.FrozenInstanceError`.

Type checkers see a frozen dataclass through :func:`typing.dataclass_transform`.
"""

from __future__ import annotations

import dataclasses  # with inspect deferred: vtdlud/__init__.py
from collections.abc import Callable
from operator import attrgetter
from typing import Any, NoReturn, TypeVar, dataclass_transform

T = TypeVar("T", bound=type)

_FACTORY = object()  # a parameter left at this was not passed: call the field's default_factory


def _key(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The tuple of those attributes, always a tuple (as the generated ``__eq__`` compares)."""
    if len(names) >= 2:
        getter: Callable[[Any], tuple[Any, ...]] = attrgetter(*names)
        return getter
    if names:
        (name,) = names
        return lambda obj: (getattr(obj, name),)
    return lambda obj: ()


def _frozen_setattr(self: object, name: str, value: object) -> NoReturn:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> NoReturn:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _init_source(
    cls: type, fields: tuple[dataclasses.Field[Any], ...]
) -> tuple[str, dict[str, Any]]:
    """The source of ``__init__`` and the names it refers to (defaults, factories)."""
    names: dict[str, Any] = {"_FACTORY": _FACTORY}
    params: list[str] = []
    kw_only: list[str] = []
    body: list[str] = []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            names[f"_dflt_{f.name}"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
        if f.init:
            if f.default is not dataclasses.MISSING:
                param = f"{f.name}=_dflt_{f.name}"
            elif f.default_factory is not dataclasses.MISSING:
                param = f"{f.name}=_FACTORY"
                body.append(f"if {f.name} is _FACTORY: {f.name} = _factory_{f.name}()")
            else:
                param = f.name
            (kw_only if f.kw_only is True else params).append(param)
            value = f.name
        elif f.default_factory is not dataclasses.MISSING:
            value = f"_factory_{f.name}()"
        else:
            continue  # as dataclasses: the class attribute holds the default, if there is one
        body.append(f"_d[{f.name!r}] = {value}")
    if kw_only:
        params += ["*", *kw_only]
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    lines = [f"def __init__(self{''.join(', ' + p for p in params)}):", "  _d = self.__dict__"]
    lines += [f"  {line}" for line in body]
    return "\n".join(lines), names


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def frozen(cls: T) -> T:
    """Make ``cls`` a frozen dataclass (see the module docstring)."""
    documented = cls.__doc__ is not None
    if not documented:
        # dataclasses would build one with inspect.signature (for any false __doc__, "" too);
        # a placeholder, replaced below by the same text
        cls.__doc__ = "-"
    dataclasses.dataclass(cls, init=False, repr=False, eq=False)
    fields = dataclasses.fields(cls)
    for name in ("__setattr__", "__delattr__"):
        if name in cls.__dict__:
            raise TypeError(f"{cls.__name__}: a frozen dataclass cannot define {name}")
    source, scope = _init_source(cls, fields)
    exec(source, scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"

    compared = _key(tuple(f.name for f in fields if f.compare))
    hashed = _key(tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)))
    shown = tuple(f.name for f in fields if f.repr)

    def __eq__(self: Any, other: Any) -> Any:  # noqa: N807 - the method it is
        if other.__class__ is self.__class__:
            return compared(self) == compared(other)
        return NotImplemented

    def __hash__(self: Any) -> int:  # noqa: N807
        return hash(hashed(self))

    def __repr__(self: Any) -> str:  # noqa: N807
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({args})"

    own = cls.__dict__
    # As dataclasses: a __hash__ of the class body is kept, but not the None that Python puts
    # there for a body defining __eq__ alone.
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    methods: dict[str, Callable[..., Any]] = {"__init__": init, "__repr__": __repr__}
    methods["__eq__"] = __eq__
    if not explicit_hash:
        methods["__hash__"] = __hash__
    for name, method in methods.items():
        if name not in own or (name == "__hash__" and own[name] is None):
            method.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, method)
    cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
    cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
    if not documented:
        cls.__doc__ = f"{cls.__name__}({', '.join(f.name for f in fields if f.init)})"
    return cls


def is_frozen(cls: type) -> bool:
    """A dataclass whose instances cannot be changed: ``@frozen`` or ``@dataclass(frozen=True)``."""
    if not dataclasses.is_dataclass(cls):
        return False
    params = getattr(cls, "__dataclass_params__", None)
    return cls.__setattr__ is _frozen_setattr or bool(getattr(params, "frozen", False))
