"""The guides' code runs as written (every ```python block of docs/guides, in order)."""

import pathlib
import re

import pytest

GUIDES = sorted((pathlib.Path(__file__).resolve().parent.parent / "docs" / "guides").glob("*.md"))


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.stem)
def test_guide_code_runs(guide, capsys):
  blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), flags=re.S)
  assert blocks, f"{guide.name} has no code"
  namespace: dict = {}
  for code in blocks:
    exec(compile(code, str(guide), "exec"), namespace)  # noqa: S102 - our own documentation
