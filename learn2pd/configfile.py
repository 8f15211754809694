"""Typed, checked settings: one mechanism for config files, flags, plan parameters and model arguments.

A `Check` says what a value must be (a type, a range, a set of choices); it reads flag text and YAML
values alike and refuses anything else in one line naming where the value came from, the value and what
is allowed. Dataclass configs declare it per field with `option(...)`; `config_from_args` builds one from
a YAML file plus `--key value` flags (flags win) and checks every field before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path

import yaml

OVERWRITE_FLAG = "--overwrite true (or overwrite: true in the config)"


class ConfigError(ValueError):
    """A setting the user gave that is of the wrong type, out of range or unknown (the message says which)."""


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text", dict: "a mapping",
          list: "a list"}


@dataclasses.dataclass(frozen=True)
class Check:
    """What a value must be: `kind` (int, float, bool, str, dict, list), optionally None, in a range, one of
    `choices`. `__call__` returns the value in its type (flag text read as YAML; 1e-3 is a float) or raises."""

    kind: type = str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple | None = None
    optional: bool = False

    def allowed(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
            text = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
            low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
            if low and self.le is not None:
                text += f" in {low}, {self.le:g}]"
            elif low:
                text += f" {'>=' if low[0] == '[' else '>'} {low[1:]}"
            elif self.le is not None:
                text += f" <= {self.le:g}"
        return text + (" (or null)" if self.optional else "")

    def __call__(self, value, where: str):
        if isinstance(value, str) and (self.kind is not str or (self.optional and value in ("null", "~"))):
            value = _yaml_scalar(value)
        if value is None and self.optional:
            return None
        ok = True
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind is float:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    ok = False
            ok = ok and isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
            value = float(value) if ok else value
        elif self.kind is str:
            ok = isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))
            value = str(value) if ok else value
        else:  # dict, list, or a tuple of kinds (`str | list[str]`)
            ok = isinstance(value, self.kind)
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                  and (self.le is None or value <= self.le))
        if not ok:
            raise ConfigError(f"{where} must be {self.allowed()}, got {value!r}")
        return value

    def flag(self, name: str):
        """An argparse `type=`: the flag's text checked as this value (argparse names the flag)."""
        def parse(text: str):
            try:
                return self(text, "it")
            except ConfigError as err:
                raise argparse.ArgumentTypeError(str(err).removeprefix("it ")) from None
        parse.__name__ = name  # argparse's fallback message names the type
        return parse


def _yaml_scalar(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def option(default=dataclasses.MISSING, help: str = "", factory=None, ge=None, gt=None, le=None, choices=None):
    """A config field with the help text its `--flag` shows (the default is added there), and its range or
    choices; the type comes from the annotation."""
    meta = {"help": help, "check": {"ge": ge, "gt": gt, "le": le, "choices": tuple(choices) if choices else None}}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_check(cls, f: dataclasses.Field) -> Check:
    hint = typing.get_type_hints(cls)[f.name]
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in members
    kinds = tuple(typing.get_origin(m) or m for m in members if m is not type(None))  # list[str] -> list
    kind = kinds[0] if len(kinds) == 1 else kinds
    return Check(kind, optional=optional, **f.metadata.get("check", {}))


def check_fields(obj, where=lambda name: name) -> None:
    """Check (and coerce in place) every field of the dataclass `obj` against its annotation and `option`
    range; `where(name)` names a field in errors. Configs call it from `__post_init__`, so the Python API is
    checked too."""
    for f in dataclasses.fields(obj):
        object.__setattr__(obj, f.name, field_check(type(obj), f)(getattr(obj, f.name), where(f.name)))


def build(cls, values, where: str):
    """`cls(**values)` from a mapping read from a file or argument (`where` names it): a mapping, no unknown
    keys, each value checked, so a mistake is one line naming `where: key`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {', '.join(fields)}")
    return cls(**{k: field_check(cls, fields[k])(v, f"{where}: {k}") for k, v in values.items()})


def _help(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("\n...").strip()  # as YAML
    text = f.metadata.get("help", "")
    return (f"{text} (default: {shown})" if text else f"default: {shown}").replace("%", "%%")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake raises ConfigError: the tool prints it as its one line `prog: error: ...` (exit 2),
    without the usage block above it."""

    def error(self, message: str):
        raise ConfigError(message)


def read_yaml(path: str | Path, what: str) -> dict:
    """A YAML mapping from a file, or one line naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file {path}: see {what}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{at} is not valid YAML ({getattr(e, 'problem', None) or e}): see {what}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold `key: value` lines, got a {type(values).__name__}: see {what}")
    return values


def config_from_args(cls, argv, prog: str, description: str, example: str, skip: tuple[str, ...] = ()):
    """Build `cls` from `--config FILE` and one flag per field, every value checked against its field.

    Flag values are read as YAML (`--epochs 5`, `--steps null`, `--filter "{kind: positionwise}"`);
    fields typed `str` keep the text as given, fields typed `float` take `1e-3` too. Unknown keys in
    the file are an error naming the known ones.
    """
    ap = OneLineParser(prog=prog, description=description)
    ap.add_argument("--config", help=f"YAML file with {cls.__name__} keys ({example})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for name in fields:
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=_help(fields[name]))
    args = ap.parse_args(argv)
    values, source = {}, {}
    if args.config:
        values = read_yaml(args.config, example)
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{args.config}: unknown keys {unknown}; known: {', '.join(fields)}")
        source = {k: f"{args.config}: {k}" for k in values}
    for name, text in vars(args).items():
        if name in fields and text is not None:
            values[name], source[name] = text, f"--{name.replace('_', '-')}"
    for name, value in values.items():
        values[name] = field_check(cls, fields[name])(value, source[name])
    return cls(**values)

