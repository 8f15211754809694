"""The documentation a user reads first: its links resolve, and the quickstart runs as written.

README.md marks the blocks a fresh clone runs as they stand with `<!-- runnable -->` on the line before
the fence; this test runs each (shell blocks with bash, Python blocks with this interpreter) from the
repository root, with this environment's console scripts first on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
RUNNABLE = re.compile(r"<!-- runnable -->\n```(\w+)\n(.*?)\n```", re.S)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code is not a link
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    bad = []
    for target in relative_links(doc):
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            bad.append(f"{target} (no file {dest.relative_to(ROOT) if ROOT in dest.parents else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not bad, f"{doc.relative_to(ROOT)}: broken links: {bad}"


def test_the_link_checker_sees_links_and_anchors(tmp_path):
    (tmp_path / "a.md").write_text("# A title, here\n[ok](b.md#part-two) [web](https://x.org) `[no](c.md)`\n"
                                   "```\n[code](d.md)\n```\n")
    (tmp_path / "b.md").write_text("## Part two\n")
    assert relative_links(tmp_path / "a.md") == ["b.md#part-two"]
    assert _anchors(tmp_path / "a.md") == {"a-title-here"} and "part-two" in _anchors(tmp_path / "b.md")


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def runnable_blocks() -> list[tuple[str, str]]:
    return RUNNABLE.findall((ROOT / "README.md").read_text())


def test_readme_marks_a_shell_and_a_python_quickstart():
    assert {lang for lang, _ in runnable_blocks()} == {"bash", "python"}


@pytest.mark.parametrize("lang,code", runnable_blocks(), ids=lambda v: v if v in ("bash", "python") else "")
def test_quickstart_runs_as_written(lang, code, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"README {lang} block failed:\n{code}\n--- stderr:\n{run.stderr[-2000:]}"
    assert run.stdout.strip(), "a quickstart block printed nothing"
