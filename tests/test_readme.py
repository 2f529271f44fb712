"""The README's two set-up commands exist, and CI runs exactly the test one."""

from __future__ import annotations

import re

from conftest import REPO


def _commands():
    text = (REPO / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second():
    commands = _commands()
    assert len(commands) == 2
    run_default, run_tests = commands
    assert run_default.endswith("python -m gen_jax")
    assert "pytest" in run_tests
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert run_tests.replace("pip install ", "pip install -q ") == ci
