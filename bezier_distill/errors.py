"""User-facing errors and warnings: one-line messages that the CLI prints without a traceback (exit status 2).

A leaf module (it imports nothing from the package), so every module can raise these.
"""
from __future__ import annotations

import shlex

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
