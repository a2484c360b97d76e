"""The README's Python examples run as written (section "From Python")."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readmes_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = _python_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:  # one notebook: the second block uses the first one's study
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert (tmp_path / "results_py" / "tables" / "decoding.tsv").is_file()
    assert "decode sub-01" in out and "metric='top1'" in out  # progress, and the scores
