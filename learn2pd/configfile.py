"""Dataclass configs from a YAML file plus `--key value` flags (flags win): the trainers' CLI shape."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

OVERWRITE_FLAG = "--overwrite true (or overwrite: true in the config)"


def option(default=dataclasses.MISSING, help: str = "", factory=None):
    """A config field with the help text its `--flag` shows (the default is added there)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _help(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("\n...").strip()  # as YAML
    text = f.metadata.get("help", "")
    return (f"{text} (default: {shown})" if text else f"default: {shown}").replace("%", "%%")


def config_from_args(cls, argv, prog: str, description: str, example: str, skip: tuple[str, ...] = ()):
    """Build `cls` from `--config FILE` and one flag per field.

    Flag values are read as YAML (`--epochs 5`, `--steps null`, `--filter "{kind: positionwise}"`);
    fields typed `str` keep the text as given, fields typed `float` take `1e-3` too. Unknown keys in
    the file are an error naming the known ones.
    """
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--config", help=f"YAML file with {cls.__name__} keys ({example})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for name in fields:
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=_help(fields[name]))
    args = ap.parse_args(argv)
    values = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"no config file {args.config}: see {example}")
        values = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{args.config}: unknown keys {unknown}; known: {', '.join(fields)}")
    for name, text in vars(args).items():
        if name in fields and text is not None:
            values[name] = text if str(fields[name].type) == "str" else yaml.safe_load(text)
    for name, value in values.items():  # YAML reads `1e-3` (no dot) as text
        if str(fields[name].type) == "bool" and not isinstance(value, bool):  # "ture" would be truthy
            raise ValueError(f"{name} must be true or false, got {value!r}")
        if str(fields[name].type) == "float" and isinstance(value, str):
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {value!r}") from None
    return cls(**values)
