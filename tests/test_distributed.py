"""Several processes: 2 local processes x 4 simulated CPU devices (gloo collectives) give the
single-process results (data-parallel steps and fit, SISA, sharded LM checkpoints), and the
launcher's failure handling."""

import json
import os
import shutil
import sys

import jax
import numpy as np

import mp_common
import sisa_fixtures
from jaxunlearn import cli, data, distributed

HERE = os.path.dirname(__file__)


def _launch_worker(script: str, args: list[str], processes: int = 2) -> None:
  lines = []
  env_path = os.environ.get("PYTHONPATH", "")
  os.environ["PYTHONPATH"] = HERE + (os.pathsep + env_path if env_path else "")
  try:
    code = distributed.launch(processes, args, program=[sys.executable, os.path.join(HERE, script)],
                              devices_per_process=8 // processes, timeout=300, echo=lines.append)
  finally:
    os.environ["PYTHONPATH"] = env_path
  assert code == 0, "\n".join(lines[-30:])


def test_two_processes_give_the_single_process_results(tmp_path):
  out = str(tmp_path / "mp.npz")
  lines = []
  env_path = os.environ.get("PYTHONPATH", "")
  os.environ["PYTHONPATH"] = HERE + (os.pathsep + env_path if env_path else "")
  try:
    code = distributed.launch(2, [out], program=[sys.executable, os.path.join(HERE, "mp_worker.py")],
                              devices_per_process=4, timeout=300, echo=lines.append)
  finally:
    os.environ["PYTHONPATH"] = env_path
  assert code == 0, "\n".join(lines[-30:])
  got = np.load(out)
  assert int(got["processes"]) == 2 and int(got["devices"]) == 8
  # The reference: one process, the same 8-device mesh shape, the whole batch.
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  x, y, mask = mp_common.data()
  ref = mp_common.compute(distributed.global_batch({"x": x, "y": y, "mask": mask}, mesh))
  ref.update(mp_common.fitted(mesh))
  assert set(ref) == set(got.files) - {"processes", "devices"}
  for k, v in ref.items():
    np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_sisa_in_two_processes_equals_one_process_bit_for_bit(tmp_path):
  train, _ = data.load("digits")
  job = sisa_fixtures.Job(train)
  forget = [job.ids_in(0, 1)[0], job.ids_in(1, 0)[0]]  # shard 0 (process 0) from slice 1, shard 1 (process 1) from 0
  # The reference, in this one process with 8 devices.
  alone = job.open(tmp_path / "alone", new=True, strategy="sequential")
  trained = alone.train().digests
  shutil.copytree(tmp_path / "alone", tmp_path / "trained_alone")
  result = alone.forget(forget)
  forgotten = alone.digests()
  assert forgotten != trained and result.retrained == {"0": 1, "1": 0}

  out = tmp_path / "out"
  out.mkdir()
  _launch_worker("mp_sisa_worker.py", [str(out), str(tmp_path / "trained_alone"), str(tmp_path / "fresh"),
                                       ",".join(map(str, forget))])
  runs = [json.loads((out / f"process_{k}.json").read_text()) for k in range(2)]
  for got in runs:  # every process returns the same, and it is the one-process result
    assert got["processes"] == 2
    assert got["train"] == trained
    assert got["forget"]["digests"] == forgotten
    assert got["forget"]["retrained"] == result.retrained and got["forget"]["steps"] == result.steps
    assert got["forget"]["seq"] == 1
    assert got["forget_elsewhere"] == forgotten
    assert "1 id(s) are not in the SISA plan" in got["unknown"]
  # The directory written by two processes is a complete one: one process reads, checks and
  # verifies it; its files are those of the one-process directory.
  fresh = job.open(tmp_path / "fresh")
  assert fresh.digests() == forgotten and fresh.verify().ok
  ours = json.loads((tmp_path / "fresh" / "manifest.json").read_text())
  theirs = json.loads((tmp_path / "alone" / "manifest.json").read_text())
  assert ours["stages"] == theirs["stages"] and ours["final"] == theirs["final"]
  assert ours["forgotten"] == theirs["forgotten"] == sorted(forget)
  ledger = (tmp_path / "fresh" / "ledger.jsonl").read_text().splitlines()
  assert len(ledger) == 1 and json.loads(ledger[0])["ids"] == sorted(forget)
  assert not fresh.status()["unreferenced"]


def test_sharded_lm_parameters_saved_and_restored_across_process_counts(tmp_path):
  from jaxunlearn.lm import sharding

  full = mp_common.lm_params()
  auto = jax.sharding.AxisType.Auto
  # Written by this one process on 8 devices; read below by two processes on two meshes.
  sharding.save_params(str(tmp_path / "alone"), sharding.shard_params(full, jax.make_mesh((8,), ("fsdp",), axis_types=(auto,))))
  out = tmp_path / "out"
  out.mkdir()
  _launch_worker("mp_lm_worker.py", [str(tmp_path / "alone"), str(tmp_path / "two"), str(out)])
  for k in range(2):
    got = json.loads((out / f"process_{k}.json").read_text())
    for mesh in ("fsdp8", "data2_fsdp4"):
      assert got[mesh]["equal"] and got[mesh]["pieces"] > 0, (k, mesh, got)
    assert got["fsdp8"]["split_over_processes"] > 0  # pieces of one parameter lived in different processes
  # Written by two processes (each its own pieces); read back by this one on another mesh.
  for mesh in (jax.make_mesh((4,), ("fsdp",), axis_types=(auto,), devices=jax.devices()[:4]),
               jax.make_mesh((8,), ("fsdp",), axis_types=(auto,))):
    back = sharding.restore_params(str(tmp_path / "two"), mesh, template=full)
    flat = dict(jax.tree_util.tree_flatten_with_path(full)[0])
    for path, arr in jax.tree_util.tree_flatten_with_path(back)[0]:
      np.testing.assert_array_equal(np.asarray(arr), flat[path], err_msg=jax.tree_util.keystr(path))
  with __import__("pytest").raises(FileExistsError, match="never overwrites"):
    sharding.save_params(str(tmp_path / "two"), full)


def test_score_in_two_processes_equals_one_process(tmp_path, capsys):
  from jaxunlearn._src import score

  # Lane recipes (one with draws salted by model index), and a method run model by model.
  methods = ["gradient_difference", "reset_repair", "random_label"]
  alone = score.run(n_models=4, epochs=2, methods=methods)
  path = tmp_path / "score.json"
  args = ["score", "--models", "4", "--epochs", "2", "--methods", ",".join(methods), "--json", str(path)]
  assert cli.main(["launch", "--processes", "2", "--devices-per-process", "4", "--", *args]) == 0
  out = capsys.readouterr().out
  assert "[0] wrote" in out and "[1] wrote" not in out  # one process writes the file
  two = json.loads(path.read_text())
  assert two["processes"] == 2 and alone["processes"] == 1
  for name in ("retrain", "original", "retrain_ceiling", *methods):
    want = alone[name] if name in alone else alone["methods"][name]
    got = two[name] if name in two else two["methods"][name]
    assert {k: v for k, v in got.items() if k != "seconds"} == {k: v for k, v in want.items() if k != "seconds"}, name


def test_launch_stops_every_process_when_one_fails(tmp_path, capsys):
  script = tmp_path / "fail.py"
  script.write_text("import os, sys, time\n"
                    "if os.environ['JAXUNLEARN_PROCESS_ID'] == '1':\n"
                    "  print('bad input in process 1', file=sys.stderr); sys.exit(3)\n"
                    "time.sleep(60)\n")
  lines = []
  code = distributed.launch(2, [], program=[sys.executable, str(script)], timeout=50, echo=lines.append)
  assert code == 3
  assert any("[1] bad input in process 1" == line for line in lines)
  assert "process 1 failed (exit code 3)" in lines[-1] and "bad input" in lines[-1]


def test_launch_command_line_needs_a_command(capsys):
  import pytest

  with pytest.raises(SystemExit):
    cli.main(["launch", "--processes", "2"])
  assert "needs a command" in capsys.readouterr().err


def test_launch_runs_a_jaxunlearn_command_in_each_process(capsys):
  assert cli.main(["launch", "--processes", "2", "--devices-per-process", "2", "--", "methods"]) == 0
  out = capsys.readouterr().out
  assert "[0] " in out and "[1] " in out and "ssd" in out  # both joined the group, then ran the command
