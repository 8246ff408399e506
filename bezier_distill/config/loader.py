"""Config files: YAML/JSON sections into validated dataclasses, --set overrides, and the recorded form.

A config file has one section per CLI stage (teacher, reflow, guides, distill, sample, compare);
each subcommand reads its own section and records it, with every default filled in, as
`config.yaml` beside its outputs. A wrong type or an unknown field raises ConfigError naming it.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, asdict, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError, fail, join
from .comparison import CompareConfig
from .stages import DistillConfig, GuidesConfig, ReflowConfig, SampleConfig, TeacherConfig

# section name in a config file -> stage dataclass (CLI subcommand names map onto these sections)
STAGES: dict[str, type] = {
    "teacher": TeacherConfig,
    "reflow": ReflowConfig,
    "guides": GuidesConfig,
    "distill": DistillConfig,
    "sample": SampleConfig,
    "compare": CompareConfig,
}

# fields that may change between a run and its resumption (they do not change the result)
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.checkpoint_every")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list (each {_type_name(typing.get_args(tp)[0])})"
    if is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    """value as type tp (nested dataclasses from mappings, ints accepted as floats), or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            try:
                return _convert(inner[0], value, where)
            except ConfigError:
                pass
    elif origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_convert(typing.get_args(tp)[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    elif is_dataclass(tp):
        return from_dict(tp, value, where)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    fail(where, f"expected {_type_name(tp)}, got {value!r}")


def _default(f: Any) -> Any:
    """A dataclass field's default value (a fresh one from its factory), None when it has none."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


def from_dict(cls: type, data: Any, where: str = "", base: Any = None) -> Any:
    """Builds dataclass cls from a mapping, rejecting unknown fields and wrong types by name; base (an
    instance of cls) gives the values of the fields that data leaves out (default: cls's defaults).

    A nested section given in part keeps the enclosing field's own defaults for the rest: with
    `compare.student` defaulting to target "endpoint", `{student: {steps: 5}}` changes only the steps.
    """
    if not isinstance(data, dict):
        fail(where or "<top>", f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            fail(join(where, str(key)), f"unknown field (known: {', '.join(known)})")
    values = {}
    for key, value in data.items():
        inner = getattr(base, key) if base is not None else _default(known[key])
        if is_dataclass(inner) and isinstance(value, dict):
            values[key] = from_dict(type(inner), value, join(where, key), base=inner)
        else:
            values[key] = _convert(hints[key], value, join(where, key))
    return replace(base, **values) if base is not None else cls(**values)


def validate(cfg: Any, where: str = "") -> Any:
    """Type-checks every field and runs each nested dataclass's checks(); ConfigError for the first problem."""
    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            validate(value, join(where, f.name))
        elif isinstance(value, list) and value and all(is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                validate(item, f"{join(where, f.name)}[{i}]")
        else:
            _convert(hints[f.name], value, join(where, f.name))
    for name, problem in cfg.checks():
        if problem:
            fail(join(where, name), problem)
    return cfg


def read_file(path: str | Path) -> dict:
    """The mapping in a .yaml/.yml/.json file; ConfigError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ConfigError(f"config file '{path}' is not valid {kind}: {detail}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}': expected a mapping of stage sections ({', '.join(STAGES)})")
    return data


def apply_override(data: dict, assignment: str) -> None:
    """Sets one dotted field from "section.field.sub=value" (value parsed as YAML) in a raw config mapping."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set '{assignment}': expected FIELD=VALUE, e.g. distill.train.steps=100")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            fail(key, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_stage(section: str, data: dict) -> Any:
    """The validated config of one stage from a raw mapping of sections (read_file's, after overrides);
    an absent section means every default."""
    for key in data:
        if key not in STAGES:
            fail(str(key), f"unknown section (known: {', '.join(STAGES)})")
    return validate(from_dict(STAGES[section], data.get(section) or {}, section), section)


def to_yaml(section: str, cfg: Any) -> str:
    """The file that reproduces cfg: {section: every field}."""
    return yaml.safe_dump({section: asdict(cfg)}, sort_keys=False)
