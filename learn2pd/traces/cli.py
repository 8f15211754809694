"""`collect-traces --config FILE [--key value ...] [--verbose]`: the config file's keys, each overridable by flag."""

from __future__ import annotations

import sys

from learn2pd.configfile import config_from_args
from learn2pd.errors import run_command
from learn2pd.traces.collector import CollectConfig, collect_traces
from learn2pd.verbosity import quiet_argv


def build_config(argv=None) -> CollectConfig:
    return config_from_args(CollectConfig, argv, "collect-traces", __doc__, "configs/collect/tiny.yaml")


def main(argv=None) -> int:
    def command() -> int:
        path = collect_traces(build_config(quiet_argv(sys.argv[1:] if argv is None else argv)))
        print(f"traces written to {path} (load with learn2pd.traces.load_traces)")
        return 0

    return run_command("collect-traces", command, resumes=True)  # finished shards are kept: a rerun resumes


if __name__ == "__main__":
    sys.exit(main())
