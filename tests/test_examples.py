import importlib.util
import pathlib

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
