"""README.md is generated from nbs/index.ipynb and opens with the two newcomer commands."""
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def test_readme_in_sync_with_index_notebook():
    r = subprocess.run([sys.executable, "tools/make_readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def _opening_commands():
    text = (ROOT/"README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index("```bash") < text.index("\n## "), "README must open with a bash block of commands"
    return [l.split("#")[0].strip() for l in block.group(1).splitlines() if l.split("#")[0].strip()]

def test_readme_opens_with_exactly_two_commands():
    cmds = _opening_commands()
    assert len(cmds) == 2, cmds
    setup_and_demo, setup_and_test = cmds
    assert setup_and_demo.startswith("bash tools/setup.sh && ") and " demo" in setup_and_demo
    assert setup_and_test == "bash tools/setup.sh && bash tools/test.sh"

def test_ci_runs_the_readme_test_command():
    ci = (ROOT/".ci"/"run").read_text()
    assert _opening_commands()[1] in ci

def test_no_settings_ini():
    # nbdev 3 refuses a bare settings.ini: its settings live in pyproject.toml.
    assert not (ROOT/"settings.ini").exists()
    assert "[tool.nbdev]" in (ROOT/"pyproject.toml").read_text()
