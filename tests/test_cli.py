import json

from jaxunlearn import cli


def test_demo_runs_end_to_end_and_writes_json(tmp_path, capsys):
  out = tmp_path / "report.json"
  rc = cli.main(["demo", "--methods", "ssd,finetune", "--epochs", "8", "--json", str(out)])
  assert rc == 0
  report = json.loads(out.read_text())
  assert set(report["methods"]) == {"ssd", "finetune"}
  for row in [report["original"], report["retrain"], *report["methods"].values()]:
    assert {"forget_acc", "retain_acc", "test_acc", "seconds", "compile_seconds"} <= set(row)
  assert report["original"]["forget_acc"] > 0.9
  assert report["retrain"]["forget_acc"] < 0.05  # a class never seen is never predicted
  assert report["methods"]["ssd"]["forget_acc"] < 0.05
  assert "Unlearning on digits" in capsys.readouterr().out


def test_demo_bad_input_is_reported(capsys):
  assert cli.main(["demo", "--methods", "ssd,telepathy"]) == 2
  err = capsys.readouterr().err
  assert "telepathy" in err and "gradient_difference" in err
  assert cli.main(["demo", "--forget", "class:12"]) == 2
  assert "out of range" in capsys.readouterr().err
