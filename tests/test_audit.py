"""`jaxunlearn train` / `jaxunlearn forget`: checkpoint in, checkpoint out, audited, crash-safe."""

import json
import os
import sys

import jax
import numpy as np
import pytest

import jaxunlearn as ju
from jaxunlearn import cli, data, losses
from jaxunlearn._src import audit, sisa_store
from jaxunlearn._src import methods as methods_lib
from jaxunlearn._src.sisa_files import file_digests


class Killed(Exception):
  pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpt")
  path = str(d / "model")
  assert cli.main(["train", "--out", path, "--epochs", "2"]) == 0
  return path


def _apply_params(path):
  apply, template, _ = audit.resolve_model("mlp", (8, 8, 1), 10)
  return apply, audit.restore_params(path, template)


def test_forget_writes_a_new_checkpoint_and_an_audit_record(trained, tmp_path, capsys):
  before = file_digests(trained)
  out = str(tmp_path / "out" / "unlearned")
  assert cli.main(["forget", "--checkpoint", trained, "--out", out, "--method", "gradient_ascent",
                   "--ids", "3,17,42", "--hyper", "epochs=2", "--hyper", "learning_rate=1e-3"]) == 0
  assert "forgot 3 id(s)" in capsys.readouterr().out
  assert file_digests(trained) == before  # the input is only read
  ledger = audit.read_ledger(str(tmp_path / "out"))
  assert len(ledger) == 1
  rec = ledger[0]
  assert rec["method"] == "gradient_ascent" and rec["ids_count"] == 3 and rec["hyper"]["epochs"] == 2
  assert rec["input_digest"] == ju.sisa.digest(_apply_params(trained)[1])
  assert rec["output_digest"] == ju.sisa.digest(_apply_params(out)[1])
  # The same method run directly on the restored parameters gives the written ones.
  train, _ = data.load("digits")
  forget, retain = data.split_forget(train, [3, 17, 42])
  apply, params = _apply_params(trained)
  direct = methods_lib.get("gradient_ascent")(losses.cross_entropy_loss(apply), params, forget=forget,
                                              retain=retain, seed=0, epochs=2, learning_rate=1e-3)
  for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(_apply_params(out)[1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert rec["after"]["forget"] <= rec["before"]["forget"]
  # Chaining: the output is a valid input (its dataset and model are recorded in it).
  out2 = str(tmp_path / "out" / "twice")
  record = ju.forget_checkpoint(out, out2, method="finetune", ids=[5], hyper={"epochs": 1})
  assert record["input_digest"] == rec["output_digest"]
  assert len(audit.read_ledger(str(tmp_path / "out"))) == 2


def test_refusals(trained, tmp_path, capsys):
  out = str(tmp_path / "o")
  os.makedirs(out)
  assert cli.main(["forget", "--checkpoint", trained, "--out", out, "--method", "ssd", "--ids", "3"]) == 2
  assert "never overwrites" in capsys.readouterr().err
  new = str(tmp_path / "n")
  for argv, message in [(["--method", "telepathy", "--ids", "3"], "telepathy"),
                        (["--method", "ssd", "--ids", "99999"], "99999"),
                        (["--method", "ssd", "--ids", "3", "--hyper", "alpha_scale=big"], "a number"),
                        (["--method", "ssd", "--ids", "3", "--hyper", "nope=1"], "unknown hyper-parameter")]:
    assert cli.main(["forget", "--checkpoint", trained, "--out", new, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(new)
  assert cli.main(["forget", "--checkpoint", str(tmp_path / "none"), "--out", new, "--method", "ssd",
                   "--ids", "3", "--dataset", "digits", "--model", "mlp"]) == 2


def test_killed_at_every_step_leaves_out_absent_or_complete(trained, tmp_path, monkeypatch):
  seen = []
  monkeypatch.setattr(sisa_store, "fault", seen.append)
  ju.forget_checkpoint(trained, str(tmp_path / "probe" / "o"), method="finetune", ids=[3], hyper={"epochs": 1})
  assert seen == ["audit:written", "audit:renamed", "audit:append"]
  for k, point in enumerate(seen):
    d = tmp_path / f"k{k}"
    out = str(d / "o")

    def hook(at, point=point):
      if at == point:
        raise Killed(at)

    monkeypatch.setattr(sisa_store, "fault", hook)
    with pytest.raises(Killed):
      ju.forget_checkpoint(trained, out, method="finetune", ids=[3], hyper={"epochs": 1})
    monkeypatch.setattr(sisa_store, "fault", lambda at: None)
    assert os.path.exists(out) == (point != "audit:written")
    if os.path.exists(out):
      _apply_params(out)  # complete: restores, digest checked
    assert audit.read_ledger(str(d)) == []
    # The next forget into the directory (here: the reconciliation it runs) records what was written.
    assert audit.append_ledger(str(d)) == int(os.path.exists(out))
    if not os.path.exists(out):
      ju.forget_checkpoint(trained, out, method="finetune", ids=[3], hyper={"epochs": 1})  # the re-run works
      assert not [e for e in os.listdir(d) if ".tmp" in e]  # the interrupted write's leftover is gone
    assert len(audit.read_ledger(str(d))) == 1 and audit.append_ledger(str(d)) == 0


def test_a_torn_ledger_line_is_cut_and_its_record_restored(trained, tmp_path):
  out = str(tmp_path / "o")
  ju.forget_checkpoint(trained, out, method="finetune", ids=[3], hyper={"epochs": 1})
  path = tmp_path / audit.LEDGER
  line = path.read_bytes()
  path.write_bytes(line + line[: len(line) // 2])  # a crash in the middle of a later append
  assert len(audit.read_ledger(str(tmp_path))) == 1
  path.write_bytes(line[: len(line) // 2])  # the only line torn
  assert audit.read_ledger(str(tmp_path)) == []
  assert audit.append_ledger(str(tmp_path)) == 1
  assert path.read_bytes() == line and json.loads(line)["output"] == os.path.abspath(out)


def test_a_user_model_and_a_users_own_checkpoint(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  (tmp_path / "mymodel.py").write_text(
      "from jaxunlearn import models\n"
      "def build(input_shape, num_classes, key):\n"
      "  return models.create('mlp', input_shape, num_classes, key=key, hidden=(24, 12))\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  sys.modules.pop("mymodel", None)
  import mymodel

  _, params = mymodel.build((8, 8, 1), 10, jax.random.key(3))
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(str(tmp_path / "users"), params)  # the user's own checkpoint: no jaxunlearn record
  ckpt.wait_until_finished()
  ckpt.close()
  with pytest.raises(ValueError, match="--dataset and --model"):
    ju.forget_checkpoint(str(tmp_path / "users"), str(tmp_path / "x"), method="finetune", ids=[3])
  rec = ju.forget_checkpoint(str(tmp_path / "users"), str(tmp_path / "out"), method="finetune", ids=[3, 4],
                             dataset="digits", model="mymodel:build", hyper={"epochs": 1})
  assert rec["model"] == "mymodel:build" and rec["input_digest"] == ju.sisa.digest(params)
  assert audit.read_meta(str(tmp_path / "out"))["model"] == "mymodel:build"
