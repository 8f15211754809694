"""pyproject lists learn2pd's packages by hand (to map trainers/ to learn2pd.trainers): a new one must be listed."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"learn2pd.trainers": "trainers"}
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "learn2pd").rglob("*.py")}
    assert folders | {"learn2pd.trainers"} == set(tool["packages"])
