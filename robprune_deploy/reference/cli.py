"""The command-line reference: every command, argument, default and help text of an argparse parser.

Rendered from the parser object itself (the one ``robprune`` parses with), so a new argument or a
changed help text changes the page. The synopsis is built here rather than taken from argparse's
usage text, which wraps at the terminal's width and would make the page depend on who built it.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from robprune_deploy.reference.markdown import cell, table


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, one-line help, parser)`` of each subcommand, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias of a command already listed
                    continue
                seen.add(id(sub))
                yield name, helps.get(name, ""), sub


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS
    ]


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, tuple):
        return " ".join(action.metavar)
    if action.metavar is not None:
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _spelling(action: argparse.Action) -> str:
    """``--out OUT``, ``--resume``, ``RECIPE``: how the argument is written."""
    if not action.option_strings:
        return _metavar(action)
    flags = ", ".join(action.option_strings)
    return f"{flags} {_metavar(action)}" if _takes_value(action) else flags


def synopsis(prog: str, parser: argparse.ArgumentParser) -> str:
    """``robprune run RECIPE --out OUT [--set KEY.PATH=VALUE ...] [--resume | --force]``."""
    grouped = {id(a): group for group in parser._mutually_exclusive_groups for a in group._group_actions}
    words: list[str] = [prog]
    done: set[int] = set()
    arguments = _arguments(parser)
    for action in [a for a in arguments if not a.option_strings] + [a for a in arguments if a.option_strings]:
        if id(action) in done:
            continue
        group = grouped.get(id(action))
        members = [a for a in group._group_actions if a in arguments] if group is not None else [action]
        done.update(id(a) for a in members)
        text = " | ".join(_usage_word(a) for a in members)
        required = action.required if group is None else group.required
        if not action.option_strings:
            words.append(text)
        elif required:
            words.append(f"({text})" if len(members) > 1 else text)
        else:
            words.append(f"[{text}]")
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        words.append("COMMAND ...")
    return " ".join(words)


def _usage_word(action: argparse.Action) -> str:
    word = action.option_strings[0] if action.option_strings else _metavar(action)
    if action.option_strings and _takes_value(action):
        word += f" {_metavar(action)}"
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        word += " ..."
    return word


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own placeholders, e.g. %(default)s
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text = text % {**vars(action), "prog": prog}
    return text


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off" if isinstance(action, argparse._StoreTrueAction) else "on"
    default = action.default
    if default is None or default == argparse.SUPPRESS or default == []:
        return ""
    return f"`{default}`"


def _command_section(prog: str, help_text: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} `{prog}`", ""]
    text = parser.description or help_text
    if text:
        lines += [text[0].upper() + text[1:] + ("" if text.endswith(".") else "."), ""]
    lines += ["```text", synopsis(prog, parser), "```", ""]
    rows = []
    for action in _arguments(parser):
        what = _help(action, prog)
        if action.choices is not None and action.metavar is not None:
            what += f" (one of: {', '.join(map(str, action.choices))})"
        rows.append([f"`{cell(_spelling(action))}`", _default(action), cell(what)])
    if rows:
        lines += [table(["argument", "default", "description"], rows), ""]
    for name, sub_help, sub in _subcommands(parser):
        lines += _command_section(f"{prog} {name}", sub_help, sub, level + 1)
    return lines


def cli_reference(parser: argparse.ArgumentParser, *, prog: str | None = None, title: str = "Command line") -> str:
    """The reference page of ``parser`` and of each of its subcommands, in Markdown."""
    prog = prog or parser.prog
    commands = list(_subcommands(parser))
    lines = [
        f"# {title}",
        "",
        "<!-- Generated from the argument parsers (robprune_deploy/cli) by `python -m robprune_deploy.reference`; "
        "do not edit by hand. -->",
        "",
    ]
    if commands:
        lines += [
            table(["command", "does"], [[f"[`{prog} {n}`](#{_anchor(prog, n)})", cell(h)] for n, h, _ in commands])
        ]
        lines += [""]
    lines += _command_section(prog, "", parser, 2)
    return "\n".join(lines).rstrip("\n") + "\n"


def _anchor(prog: str, name: str) -> str:
    """The id MkDocs' table of contents gives the heading `` `prog name` ``."""
    return f"{prog}-{name}".replace(" ", "-").lower()
