"""`collect-traces --config FILE [--key value ...] [--verbose]`: the config file's keys, each overridable by flag."""

from __future__ import annotations

import sys

from learn2pd.configfile import config_from_args
from learn2pd.traces.collector import CollectConfig, collect_traces
from learn2pd.verbosity import quiet_argv


def build_config(argv=None) -> CollectConfig:
    return config_from_args(CollectConfig, argv, "collect-traces", __doc__, "configs/collect/tiny.yaml")


def main(argv=None) -> int:
    try:
        argv = quiet_argv(sys.argv[1:] if argv is None else argv)  # --verbose: the libraries' own output
        cfg = build_config(argv)
        path = collect_traces(cfg)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"collect-traces: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"traces written to {path} (load with learn2pd.traces.load_traces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
