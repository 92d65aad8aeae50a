"""The command-line reference page (``reference/cli.md``), from ``nicebench.cli.build_parser()``:
every command and option with its help, as ``nicebench <command> --help`` prints them."""

from __future__ import annotations

import argparse


def cli_page(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown of the CLI reference: the program's options, then one section per command."""
    if parser is None:
        from nicebench.cli import build_parser

        parser = build_parser()
    lines = [
        "# Command line",
        "",
        "Generated when the docs are built from the argument parser (`nicebench.cli.build_parser`),"
        " so it lists exactly what `nicebench --help` and `nicebench COMMAND --help` print.",
        "",
        (parser.description or "").strip(),
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        *_options(parser),
    ]
    for name, sub in _commands(parser).items():
        help_text = _command_help(parser, name)
        lines += ["", f"## nicebench {name}", "", help_text, "", "```text"]
        lines += [sub.format_usage().strip(), "```", "", *_options(sub)]
    return "\n".join(lines) + "\n"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_help(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return _sentence(choice.help or "")
    return ""


def _options(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        name = ", ".join(action.option_strings) or action.dest
        value = _value(action)
        help_text = formatter._expand_help(action) if action.help else ""
        if action.choices and not isinstance(action.choices, dict):
            help_text += f" (one of: {', '.join(map(str, action.choices))})"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            if "default" not in help_text:
                help_text += f" (default: `{action.default}`)"
        rows.append(f"| `{name}{value}` | {_cell(help_text)} |")
    if not rows:
        return []
    return ["| argument | meaning |", "|---|---|", *rows]


def _value(action: argparse.Action) -> str:
    if not action.option_strings or action.nargs == 0:
        return ""
    return f" {action.metavar or action.dest.upper()}"


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".") if text else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()
