"""The command line starts without importing torch: `--help` and argument errors are instant."""

import subprocess
import sys


def test_cli_and_package_import_lazily():
    code = ("import sys, learn2pd, learn2pd.cli; assert 'torch' not in sys.modules, 'torch imported'; "
            "learn2pd.cli.build_parser(); assert 'torch' not in sys.modules; "
            "from learn2pd import DecodeConfig; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
