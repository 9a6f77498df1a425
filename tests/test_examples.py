import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_forget_class_example_forgets(capsys):
  results = _load("forget_class").main(forget_class=3, epochs=10)
  assert results["before"]["forget"] > 0.9
  assert results["ssd"]["forget"] < 0.1 and results["ssd"]["retain"] > 0.95
  assert results["gradient_difference"]["forget"] < results["before"]["forget"] - 0.3
  assert "after SSD" in capsys.readouterr().out


@pytest.mark.slow  # 36 s on 2 cores: run with `python -m pytest -m slow`
def test_forget_author_lm_example_forgets_the_author_more_than_the_others(capsys):
  results = _load("forget_author_lm").main()
  before, after = results["before"], results["after"]
  assert before["forget_nll"] < 0.3 and before["retain_nll"] < 0.3  # every author learned
  assert after["forget_nll"] > 20 * before["forget_nll"]  # the author forgotten (NLL 0.04 -> 1.2 here)
  assert after["retain_nll"] < after["forget_nll"] / 3  # the others much less affected (0.2 here)
  assert "after gradient difference" in capsys.readouterr().out
