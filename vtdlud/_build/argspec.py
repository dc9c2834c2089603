"""A plain view of an :mod:`argparse` parser, shared by the man page and completion generators.

argparse keeps its structure in private attributes (``_actions``, ``_SubParsersAction``); this is
the one place that reads them, and it fails loudly on anything it does not understand.
"""

from __future__ import annotations

import argparse

from vtdlud.frozen import frozen


@frozen
class Option:
    flags: tuple[str, ...]  # ("-o", "--output"); () for a positional
    dest: str
    metavar: str | None  # None: the option takes no value (a flag)
    choices: tuple[str, ...]
    help: str  # expanded like argparse's own help ("%(default)s")
    default: str | None  # printable default of an option that takes a value, else None
    is_help: bool = False  # -h/--help, which every parser has
    optional: bool = False  # a positional that may be left out (nargs="?")

    @property
    def positional(self) -> bool:
        return not self.flags

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    @property
    def name(self) -> str:
        """The longest flag, or the metavar of a positional."""
        if self.flags:
            return max(self.flags, key=len)
        assert self.metavar is not None
        return self.metavar


@frozen
class Command:
    name: str
    help: str
    description: str
    options: tuple[Option, ...]


@frozen
class Cli:
    prog: str
    description: str
    epilog: str
    options: tuple[Option, ...]  # top-level options (--version, --help)
    commands: tuple[Command, ...]

    def command(self, name: str) -> Command:
        for c in self.commands:
            if c.name == name:
                return c
        raise KeyError(name)


def _expand(action: argparse.Action, prog: str) -> str:
    if not action.help or action.help is argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=prog)
    for key, value in list(params.items()):
        if value is argparse.SUPPRESS:
            del params[key]
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    return str(action.help % params)


def _metavar(action: argparse.Action) -> str | None:
    if action.nargs == 0:
        return None
    if action.nargs not in (None, 1) and not (action.nargs == "?" and not action.option_strings):
        raise ValueError(f"{action.dest}: nargs={action.nargs!r} is not supported")
    if isinstance(action.metavar, tuple):
        raise ValueError(f"{action.dest}: tuple metavars are not supported")
    if action.metavar is not None:
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _default(action: argparse.Action) -> str | None:
    if action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS:
        return None
    if isinstance(action.default, float) and action.default.is_integer():
        return str(int(action.default))
    return str(action.default)


def _option(action: argparse.Action, prog: str) -> Option:
    return Option(
        flags=tuple(action.option_strings),
        dest=action.dest,
        metavar=_metavar(action),
        choices=tuple(str(c) for c in action.choices) if action.choices is not None else (),
        help=_expand(action, prog),
        default=_default(action),
        is_help=isinstance(action, argparse._HelpAction),
        optional=action.nargs == "?" and not action.option_strings,
    )


def describe(parser: argparse.ArgumentParser) -> Cli:
    """The parser's top-level options and its sub-commands, in declaration order."""
    prog = parser.prog
    top: list[Option] = []
    commands: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: _expand(a, prog) for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not isinstance(sub, argparse.ArgumentParser):
                    raise TypeError(f"{name}: not an ArgumentParser")
                opts = tuple(_option(a, sub.prog) for a in sub._actions)
                commands.append(
                    Command(
                        name=name,
                        help=helps.get(name, ""),
                        description=sub.description or "",
                        options=opts,
                    )
                )
        else:
            top.append(_option(action, prog))
    if not commands:
        raise ValueError(f"{prog}: the parser has no sub-commands")
    return Cli(
        prog=prog,
        description=parser.description or "",
        epilog=parser.epilog or "",
        options=tuple(top),
        commands=tuple(commands),
    )
