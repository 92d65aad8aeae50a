"""A contract rule: a name, the rule in one line, and the check that enforces it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Broken",
    "ContractError",
    "Rule",
    "RuleBook",
    "When",
    "plugin_name",
    "require",
    "run_rules",
]


class ContractError(AssertionError):
    """A plugin broke its kind's contract; the message starts with the rule's name, then names
    the plugin, what was found and the rule to follow."""


class Broken(Exception):
    """Raised by a check: what it found wrong (the runner adds the rule and the plugin)."""


def require(ok: Any, detail: str) -> None:
    """Raise :class:`Broken` with ``detail`` unless ``ok`` (unlike ``assert``, this survives
    ``python -O``)."""
    if not ok:
        raise Broken(detail)


@dataclass(frozen=True)
class When:
    """The plugins a rule applies to, e.g. ``learns=True``: a label and a test on the case."""

    label: str
    holds: Callable[[Any], bool]


@dataclass(frozen=True)
class Rule:
    """One rule of a contract; ``check(case)`` raises :class:`Broken` when the plugin breaks it."""

    name: str
    text: str
    check: Callable[[Any], None]
    when: When | None = None

    def applies(self, case: Any) -> bool:
        return self.when is None or self.when.holds(case)

    def __str__(self) -> str:
        return f"{self.name}: {self.text}" + (f" [{self.when.label}]" if self.when else "")


class RuleBook:
    """Collects a kind's rules in the order they are written (``@book.rule(name, text)``)."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def rule(self, name: str, text: str, when: When | None = None):
        def add(check: Callable[[Any], None]) -> Callable[[Any], None]:
            self.rules.append(Rule(name, text, check, when))
            return check

        return add


def run_rules(rules: Iterable[Rule], case: Any, subject: str) -> None:
    """Run the rules that apply to ``case`` in order; the first broken one raises
    :class:`ContractError` ``"<rule>: <subject>: <what was found> (rule: <text>)"``."""
    for rule in rules:
        if not rule.applies(case):
            continue
        try:
            rule.check(case)
        except Broken as broken:
            raise ContractError(
                f"{rule.name}: {subject}: {broken} (rule: {rule.text})"
            ) from broken.__cause__


def plugin_name(obj: Any) -> str:
    """The registered name of a plugin class (or of an instance's class), else its class name;
    a subclass of a registered plugin is not that plugin."""
    cls = obj if isinstance(obj, type) else type(obj)
    return vars(cls).get("registered_name") or cls.__name__
