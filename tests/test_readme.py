"""The README as a newcomer reads it: every Python snippet runs as printed, in order, and every
extra an install line names exists.

The snippets run in a fresh interpreter in an empty folder, on a small learnable dataset
($FASHIONNET_DATA), so that what they train takes seconds; the code is the README's, unchanged.
"""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import write_learnable

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_every_python_snippet_runs_as_printed(tmp_path):
    data = write_learnable(tmp_path / "data", 6000, 1000)
    code = snippets()
    assert len(code) >= 6
    script = tmp_path / "work" / "readme.py"
    script.parent.mkdir()
    script.write_text("\n".join(code))
    env = {**os.environ, "FASHIONNET_DATA": str(data), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], cwd=script.parent, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'label'" in done.stdout and "'score'" in done.stdout  # classify answered
    assert (script.parent / "model.onnx").is_file() and (script.parent / "runs/quickstart").is_dir()


def test_every_extra_an_install_line_names_exists():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = set()
    for group in re.findall(r'pip install (?:-e )?"?\.\[([a-z,\-]+)\]', README):
        named |= set(group.split(","))
    assert named, "the README names no extras"
    assert named <= set(extras), named - set(extras)
    assert any(dep.startswith("onnxruntime") for dep in extras["onnx"])  # for the ONNX snippet
