"""Plugin parameters checked against the plugin's constructor, before a run does any work.

A spec such as ``rise:n_masks=abc`` is checked by name (against the constructor's keyword
parameters, with close matches) and by type (from the parameter's annotation, else its default's
type). The values are never converted here: :func:`nicebench.config.parse_value` is the one place
where a command-line string becomes a number, a boolean or None, and a TOML list becomes a tuple
(:meth:`nicebench.config.PluginSpec.make`); this module only says whether the result fits.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import ConfigError

__all__ = [
    "Parameter",
    "function_parameters",
    "constructor_parameters",
    "check_names",
    "check_params",
    "describe",
]

_UNKNOWN = object()  # no annotation, or one that could not be resolved
_KINDS = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class Parameter:
    """One keyword parameter of a plugin: its name, type (an annotation) and default."""

    name: str
    hint: Any = _UNKNOWN
    default: Any = inspect.Parameter.empty

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` fits the annotation (or, without one, the default's type)."""
        return _accepts(self.expected, value)

    @property
    def expected(self) -> Any:
        if self.hint is not _UNKNOWN:
            return self.hint
        if self.default is inspect.Parameter.empty or self.default is None:
            return Any
        return type(self.default)

    def __str__(self) -> str:
        if self.default is inspect.Parameter.empty:
            return self.name
        return f"{self.name}={self.default!r}"


def function_parameters(fn: Any, skip: Iterable[str] = ()) -> tuple[dict[str, Parameter], bool]:
    """The keyword parameters of ``fn`` (less ``self`` and ``skip``) and whether it also takes
    ``**kwargs``."""
    skipped = {"self", *skip}
    signature = inspect.signature(fn)
    hints = _hints(fn)
    params = {
        name: Parameter(name, hints.get(name, _UNKNOWN), p.default)
        for name, p in signature.parameters.items()
        if name not in skipped and p.kind in _KINDS
    }
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    return params, var_kw


def constructor_parameters(
    cls: type, skip: Iterable[str] = ()
) -> tuple[dict[str, Parameter], bool]:
    """The keyword parameters of ``cls``'s constructor, following ``**kwargs`` on to the base
    classes' constructors, and whether the chain stays open (``**kwargs`` that no base class
    names: any name may be meant)."""
    out: dict[str, Parameter] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        params, var_kw = function_parameters(init, skip)
        for name, param in params.items():
            out.setdefault(name, param)
        if not var_kw:
            return out, False
    return out, True


def check_names(
    kind: str,
    name: str,
    given: Iterable[str],
    known: Iterable[Parameter],
    where: str = "",
    error: type[Exception] = ConfigError,
) -> None:
    """Raise ``error`` for the first name in ``given`` that ``known`` lacks, with close matches
    and the accepted parameters."""
    known = list(known)
    names = [k.name for k in known]
    for key in given:
        if key in names:
            continue
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        takes = ", ".join(map(str, known)) if known else "none"
        raise error(
            f"{_prefix(where)}{kind} {name!r} has no parameter {key!r}.{hint} "
            f"Its parameters: {takes}."
        )


def check_params(
    kind: str,
    name: str,
    params: Mapping[str, Any],
    accepted: Mapping[str, Parameter],
    open_names: bool = False,
    where: str = "",
) -> None:
    """Raise :class:`ConfigError` for a parameter that ``accepted`` lacks (unless
    ``open_names``) or a value of the wrong type, naming the plugin, the parameter, the value and
    what it takes."""
    if not open_names:
        check_names(kind, name, params, accepted.values(), where)
    for key, value in params.items():
        param = accepted.get(key)
        if param is not None and not param.accepts(value):
            default = (
                ""
                if param.default is inspect.Parameter.empty
                else f" (default {_short(param.default)})"
            )
            raise ConfigError(
                f"{_prefix(where)}{kind} {name!r}: parameter {key}={value!r} must be "
                f"{describe(param.expected)}{default}, not {_a(value)}."
            )


def _hints(fn: Any) -> dict[str, Any]:
    """The resolved annotations of ``fn``; one that can't be resolved is left out."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # a name only imported for type checking: resolve the others one by one,
        out = {}  # as get_type_hints would (in the function's module)
        for name, text in getattr(fn, "__annotations__", {}).items():
            try:
                out[name] = eval(text, fn.__globals__) if isinstance(text, str) else text
            except Exception:
                continue
        return out


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _accepts(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is _UNKNOWN:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in args)
    if origin is typing.Literal:
        return value in args
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_integer(value)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if not isinstance(container, type):
        return True  # a type variable, a callable's signature, ...: nothing to go by
    if issubclass(container, Mapping):
        return isinstance(value, Mapping)
    if issubclass(container, Iterable) and not issubclass(container, str | bytes):
        if not isinstance(value, tuple | list):
            return False
        if container is tuple and len(args) != 1 and not (len(args) == 2 and args[1] is ...):
            return len(args) == 0 or (len(args) == len(value) and all(map(_accepts, args, value)))
        return not args or all(_accepts(args[0], v) for v in value)
    if issubclass(container, os.PathLike):
        return isinstance(value, str | os.PathLike)
    return isinstance(value, container)


def describe(hint: Any) -> str:
    """What a value of type ``hint`` is, in words: ``an integer``, ``a list of integers``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(h) for h in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    words = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "none",
    }
    if hint is None or hint in words:
        return words[type(None) if hint is None else hint]
    container = origin or hint
    if isinstance(container, type) and issubclass(container, Iterable):
        inner = describe(args[0]) if len(args) == 1 or (len(args) == 2 and args[1] is ...) else ""
        of = f" of {inner.removeprefix('an ').removeprefix('a ')}s" if inner else ""
        return f"a list{of}"
    return f"a {getattr(hint, '__name__', hint)}"


def _a(value: Any) -> str:
    """``value``'s type in words, for an error message."""
    if value is None:
        return "none"
    words = {bool: "a boolean", int: "an integer", float: "a decimal number", str: "a string"}
    return words.get(type(value), f"a {type(value).__name__}")
