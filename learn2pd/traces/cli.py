"""`collect-traces --config FILE [--key value ...]`: the config file's keys, each overridable by flag."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from learn2pd.traces.collector import CollectConfig, collect_traces


def build_config(argv=None) -> CollectConfig:
    ap = argparse.ArgumentParser(prog="collect-traces", description=__doc__)
    ap.add_argument("--config", help="YAML file with CollectConfig keys (configs/collect/tiny.yaml)")
    fields = {f.name: f for f in dataclasses.fields(CollectConfig) if f.name != "decode"}
    for name, f in fields.items():
        kind = {"int": int, "int | None": int, "str | None": str, "str": str}.get(str(f.type), str)
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    args = ap.parse_args(argv)
    values = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"no config file {args.config}: see configs/collect/tiny.yaml")
        values = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{args.config}: unknown keys {unknown}; known: {', '.join(fields)}")
    values.update({k: v for k, v in vars(args).items() if k in fields and v is not None})
    return CollectConfig(**values)


def main(argv=None) -> int:
    try:
        cfg = build_config(argv)
        path = collect_traces(cfg)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"collect-traces: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"traces written to {path} (load with learn2pd.traces.load_traces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
