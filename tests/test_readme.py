"""The README's two set-up commands: CI runs the test command verbatim, and both stay self-sufficient."""
from __future__ import annotations

import re

from conftest import ROOT


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)?\n(.*?)\n```", block, flags=re.S)


def test_exactly_two_setup_commands():
    cmds = _commands()
    assert len(cmds) == 2, cmds
    app, test = cmds
    assert "\n" not in app and "\n" not in test
    for c in cmds:
        assert c.startswith("python3.11 -m venv .venv && .venv/bin/pip install -q -r requirements.txt")
    assert app.endswith("streamlit run app.py")
    assert "chromium" in test and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = _commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_cmd in ci


def test_every_direct_dependency_is_pinned_and_explained():
    req = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    direct = req.split("# transitive", 1)[0]
    names = [l.split("==")[0] for l in direct.splitlines() if l and not l.startswith("#")]
    assert len(names) >= 15
    for line in direct.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.\-+]*", line), line
    readme = (ROOT / "README.md").read_text(encoding="utf-8").lower()
    deps = readme.split("## dependencies", 1)[1].split("\n## ", 1)[0]
    for n in names:
        assert f"`{n.lower()}`" in deps, f"README does not say why {n} is a dependency"
