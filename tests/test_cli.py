import json

from jaxunlearn import cli


def test_demo_defaults_reach_the_class_forgetting_targets(tmp_path, capsys):
  out = tmp_path / "report.json"
  png = tmp_path / "report.png"
  methods = ["ssd", "gradient_difference", "reset_repair"]
  rc = cli.main(["demo", "--methods", ",".join(methods), "--json", str(out), "--plot", str(png)])
  assert rc == 0
  report = json.loads(out.read_text())
  assert set(report["methods"]) == set(methods)
  keys = {"forget_acc", "retain_acc", "test_acc", "mia_auc", "js_to_retrain", "seconds", "compile_seconds",
          "relearn_steps"}
  for row in [report["original"], report["retrain"], *report["methods"].values()]:
    assert keys <= set(row)
  assert report["original"]["forget_acc"] > 0.9
  assert report["retrain"]["forget_acc"] < 0.05  # a class never seen is never predicted
  assert report["retrain"]["test_forgotten_classes_acc"] == 0.0
  assert report["original"]["test_forgotten_classes_acc"] > 0.9
  for name in methods:
    row = report["methods"][name]
    assert row["forget_acc"] <= 0.05, (name, row)
    assert abs(row["retain_acc"] - report["retrain"]["retain_acc"]) <= 0.02, (name, row)
    assert row["js_to_retrain"] < report["original"]["js_to_retrain"]
  assert report["original"]["relearn_steps"] == 0  # already at its own forget accuracy
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "Unlearning on digits" in capsys.readouterr().out


def test_demo_bad_input_is_reported(capsys):
  assert cli.main(["demo", "--methods", "ssd,telepathy"]) == 2
  err = capsys.readouterr().err
  assert "telepathy" in err and "gradient_difference" in err
  assert cli.main(["demo", "--forget", "class:12"]) == 2
  assert "out of range" in capsys.readouterr().err
