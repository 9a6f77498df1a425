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


def test_sisa_command_line_errors_and_cleanup_pending(tmp_path, capsys, monkeypatch):
  import shutil

  d = str(tmp_path / "s")
  small = ["--shards", "2", "--slices", "2", "--epochs", "2", "--batch-size", "64"]
  assert cli.main(["sisa", "train", "--dir", d, *small]) == 0
  capsys.readouterr()
  for bad in ("1_9", "3.0", "17,x"):
    assert cli.main(["sisa", "forget", "--dir", d, "--ids", bad]) == 2
    assert "expected an integer id" in capsys.readouterr().err
  (tmp_path / "ids.txt").write_bytes("3\n17\n".encode("utf-16"))
  (tmp_path / "dir_ids").mkdir()
  assert cli.main(["sisa", "forget", "--dir", d, "--ids-file", str(tmp_path / "dir_ids")]) == 2
  assert "is a directory, not a file of ids" in capsys.readouterr().err
  for lr in ("nan", "-1", "0"):
    assert cli.main(["sisa", "train", "--dir", str(tmp_path / f"lr{lr}"), *small, "--lr", lr]) == 2
    assert "learning_rate must be a finite number > 0" in capsys.readouterr().err
  (tmp_path / "afile").write_text("x")
  assert cli.main(["sisa", "status", "--dir", str(tmp_path / "afile")]) == 2
  assert "is a file, not a SISA directory" in capsys.readouterr().err
  # A sweep that fails after the commit: exit 3, "committed; cleanup pending"; the next command finishes it.
  real = shutil.rmtree
  monkeypatch.setattr(shutil, "rmtree", lambda p, *a, **k: (_ for _ in ()).throw(OSError(5, "I/O error", p)))
  assert cli.main(["sisa", "forget", "--dir", d, "--ids-file", str(tmp_path / "ids.txt")]) == 3
  err = capsys.readouterr().err
  assert "request #1 committed; cleanup pending: OSError" in err
  monkeypatch.setattr(shutil, "rmtree", real)
  assert cli.main(["sisa", "status", "--dir", d]) == 0
  out, err = capsys.readouterr()
  assert "2 forgotten" in out and "warning" not in err
  assert cli.main(["sisa", "verify", "--dir", d]) == 0
  assert "verified (every live checkpoint read back intact)" in capsys.readouterr().out
  import os

  os.remove(os.path.join(d, "manifest.json"))
  assert cli.main(["sisa", "train", "--dir", d, *small]) == 2
  assert "sisa repair" in capsys.readouterr().err
  assert cli.main(["sisa", "repair", "--dir", d]) == 0
  assert "2 id(s) forgotten" in " ".join(capsys.readouterr().out.split())


def test_cli_refuses_non_positive_counts_and_shows_defaults(capsys):
  import pytest

  for argv in (["demo", "--epochs", "0"], ["score", "--models", "-3"], ["sisa", "train", "--dir", "x", "--shards", "0"]):
    with pytest.raises(SystemExit) as exit_info:
      cli.main(argv)
    assert exit_info.value.code == 2 and "expected a positive integer" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["demo", "--help"])
  out = " ".join(capsys.readouterr().out.split())
  assert "(default: 20)" in out and "gradient_difference" in out


def test_certified_command_line(tmp_path, capsys):
  d = str(tmp_path / "cert")
  assert cli.main(["certified", "train", "--dir", d, "--sigma", "10", "--epsilon", "1"]) == 0
  assert "budget" in capsys.readouterr().out
  assert cli.main(["certified", "train", "--dir", d]) == 2  # never overwrites a model
  assert "already holds" in capsys.readouterr().err
  assert cli.main(["certified", "forget", "--dir", d, "--ids", "3,17"]) == 0
  assert "Newton step" in capsys.readouterr().out
  assert cli.main(["certified", "forget", "--dir", d, "--ids", "3"]) == 2
  assert "already removed: [3]" in capsys.readouterr().err
  assert cli.main(["certified", "forget", "--dir", d, "--ids", "x1"]) == 2
  capsys.readouterr()
  assert cli.main(["certified", "forget", "--dir", d, "--resume"]) == 0
  assert "nothing to do" in capsys.readouterr().out
  assert cli.main(["certified", "status", "--dir", d]) == 0
  out = " ".join(capsys.readouterr().out.split())
  assert "1435 examples" in out and "test accuracy (digits)" in out and "newton" in out


def test_demo_corrupt_backdoor_detects_and_unlearns(tmp_path, capsys):
  out = tmp_path / "corrective.json"
  assert cli.main(["demo", "--corrupt", "backdoor:0.05", "--methods", "aru", "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  assert report["corrupted"] == 72 and report["kind"] == "backdoor" and report["target"] == 0
  det = report["detection"]["iforest/inputs"]
  assert det["recall"] >= 0.8 and det["flagged"] == report["flagged"]
  refs = report["references"]
  assert refs["poisoned"]["attack_success"] > 0.8  # the backdoor took
  assert refs["clean_retrain"]["attack_success"] < 0.05
  assert report["methods"]["aru"]["attack_success"] < refs["poisoned"]["attack_success"] / 4
  printed = capsys.readouterr().out
  assert "Detection" in printed and "attack success" in printed
  assert cli.main(["demo", "--corrupt", "backdoor:2"]) == 2
  assert "strictly between 0 and 1" in capsys.readouterr().err
  assert cli.main(["demo", "--corrupt", "poison:0.1"]) == 2
  assert "backdoor:FRACTION" in capsys.readouterr().err
  assert cli.main(["demo", "--corrupt", "backdoor:0.05:12"]) == 2
  assert "out of range" in capsys.readouterr().err


def test_knn_command_line_is_exact(capsys):
  assert cli.main(["knn", "--forget", "class:3", "--k", "3"]) == 0
  out = " ".join(capsys.readouterr().out.split())
  assert "exact: every test query" in out and "1302" in out  # 1437 - 135 examples of class 3
  assert cli.main(["knn", "--forget", "random:2"]) == 2
