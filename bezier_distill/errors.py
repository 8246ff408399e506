"""User errors and warnings: one-line messages the CLI prints without a traceback (exit status 2),
and the ways to name what is wrong.

Every mistake a user can make (a config value, a path, a damaged file or one made by another config)
raises ConfigError (or DamagedFileError) with a one-line message that names the field or the file,
e.g. "config field 'distill.train.lr': must be > 0, got -0.1". A leaf module: it imports nothing of
the package, so every module can raise these.
"""
from __future__ import annotations

import shlex
import typing
from typing import Any

# config section -> the subcommand that runs it (the CLI's names; compare's guide maps are made by compare)
COMMAND_OF_SECTION = {"teacher": "train-teacher", "reflow": "reflow", "guides": "make-guides", "distill": "distill",
                      "sample": "sample", "compare": "compare"}


class ConfigError(ValueError):
    """A user error in a config value or a path; the message names the field and is one line."""


class DamagedFileError(ConfigError):
    """A file of a run or a dataset is damaged, unreadable or missing; the message names it and what to do."""


class DamagedFileWarning(UserWarning):
    """A damaged file was skipped (e.g. a resume fell back to an older checkpoint); the message names it."""


def rerun_command(section: str | None, out_dir: str) -> str:
    """The command that redoes (and so repairs) the output directory of a stage, from its recorded config."""
    command = COMMAND_OF_SECTION.get(section or "")
    if command is None:
        return f"rerun the command that made '{out_dir}' with the same --out"
    config = shlex.quote(f"{out_dir}/config.yaml")
    return f"rerun `bezier-distill {command} --config {config} --out {shlex.quote(out_dir)}`"


def join(where: str, name: str) -> str:
    """The dotted name of field `name` inside section `where` ("" for the top)."""
    return f"{where}.{name}" if where else name


def field_error(where: str, message: str) -> ConfigError:
    """The error for config field `where` (a dotted path such as 'distill.train.lr')."""
    return ConfigError(f"config field '{where}': {message}")


def fail(where: str, message: str) -> typing.NoReturn:
    raise field_error(where, message)


def need(ok: bool, requirement: str, value: Any) -> str | None:
    """The problem string "requirement, got value", or None when ok (for a config's checks())."""
    return None if ok else f"{requirement}, got {value!r}"


def first_difference(old: Any, new: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first field (dotted path) whose value differs between two nested mappings, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = first_difference(old.get(key), new.get(key), join(where, key))
            if found:
                return found
        return None
    return None if old == new else (where, old, new)


def check_unchanged(old: dict, new: dict, *, section: str, holder: str, remedy: str) -> None:
    """ConfigError naming the first field where `new` (this run's settings) differs from `old` (those that
    made what `holder` describes, e.g. "'runs/rf1' holds a run"); `remedy` says what to do instead."""
    found = first_difference(old, new)
    if found:
        name, before, now = found
        raise field_error(join(section, name), f"{holder} made with {before!r}, this run asks for {now!r}; {remedy}")
