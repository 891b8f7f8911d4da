"""Help text without Python types, and ``--debug`` wherever it is written.

Typer shows every parameter's Python type in ``--help`` (``--force <bool>``, ``--format <list[str]>``),
which suggests that switches take a value. :class:`ExpkitTyper` builds commands and groups that show
nothing after a switch and one plain word after an option that takes a value: its ``metavar`` when it
has one, else ``N`` (integers), ``NUMBER`` (floats), ``PATH`` (paths) or the option's name in capitals
(``--format FORMAT``). Arguments show their name in capitals and no type.

The root group also accepts ``--debug`` after the subcommand (``expkit run x.yml --debug``): it is moved
in front of the subcommand before parsing, up to a ``--`` that ends the options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

if TYPE_CHECKING:
    from typer import _click  # the click typer vendors: its types, for annotations only

#: Root options accepted after the subcommand too.
_ANYWHERE = ("--debug",)


class _UntypedArgument(TyperArgument):
    """An argument whose help row shows its name only (no ``<str>``/``<path>`` type)."""

    def display_type_rich(self, ctx: _click.Context) -> str | None:
        return None


def _word(option: TyperOption) -> str:
    """The plain word shown after an option that takes a value."""
    annotation = option.type_descriptor.annotation
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    longest = max(option.opts, key=len)
    return longest.lstrip("-").upper()


def plain_params(params: Iterable[_click.Parameter]) -> None:
    """Give every parameter a help row without a Python type (idempotent)."""
    for param in params:
        if isinstance(param, TyperOption):
            if param.is_flag or param.count:
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = _word(param)
        elif isinstance(param, TyperArgument) and not isinstance(param, _UntypedArgument):
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            # Typer offers no switch for the type column of arguments: the subclass above leaves it out.
            param.__class__ = _UntypedArgument


class PlainHelpCommand(TyperCommand):
    """A command whose ``--help`` shows no Python types."""

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        plain_params(self.get_params(ctx))
        super().format_help(ctx, formatter)


class PlainHelpGroup(TyperGroup):
    """A group whose ``--help`` shows no Python types; as the root, it takes ``--debug`` anywhere."""

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        plain_params(self.get_params(ctx))
        super().format_help(ctx, formatter)

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = hoist_root_options(args)
        return super().parse_args(ctx, args)


def hoist_root_options(args: list[str]) -> list[str]:
    """``args`` with the root options of :data:`_ANYWHERE` moved to the front (not past a ``--``)."""
    end = args.index("--") if "--" in args else len(args)
    hoisted = [a for a in args[:end] if a in _ANYWHERE]
    if not hoisted:
        return args
    return hoisted + [a for a in args[:end] if a not in _ANYWHERE] + args[end:]


class ExpkitTyper(typer.Typer):
    """A Typer app whose commands and groups are :class:`PlainHelpCommand` and :class:`PlainHelpGroup`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", PlainHelpGroup)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[CommandFunctionType], CommandFunctionType]:
        """Register a command (see :meth:`typer.Typer.command`) built as a :class:`PlainHelpCommand`."""
        if kwargs.get("cls") is None:
            kwargs["cls"] = PlainHelpCommand
        return super().command(name, **kwargs)


__all__ = ["ExpkitTyper", "PlainHelpCommand", "PlainHelpGroup", "hoist_root_options", "plain_params"]
