"""`make test` relies on `--dist loadgroup` sending tests of one xdist_group to one worker, so an expensive
shared decode runs once; some pytest/pytest-xdist pairs ignore the mark and the suite still passes, twice as
slow. This checks the installed pair on a two-group toy suite."""

import subprocess
import sys

TOY = '''
import os, pytest

@pytest.fixture(scope="session")
def shared():
    with open("computed", "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

@pytest.mark.xdist_group("g")
def test_a(shared):
    open("ran_a", "w").write(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.xdist_group("g")
def test_b(shared):
    open("ran_b", "w").write(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.parametrize("i", range(4))
def test_other(i):
    pass
'''


def test_loadgroup_sends_a_group_to_one_worker(tmp_path):
    (tmp_path / "test_toy.py").write_text(TOY)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's configuration
    run = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q",
                          "-p", "no:cacheprovider", "test_toy.py"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "ran_a").read_text() == (tmp_path / "ran_b").read_text()
    assert len((tmp_path / "computed").read_text().split()) == 1  # the shared fixture ran once
