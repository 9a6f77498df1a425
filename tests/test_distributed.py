"""Several processes: 2 local processes x 4 simulated CPU devices (gloo collectives) give the
single-process results (data-parallel steps and fit, SISA, sharded LM checkpoints), and the
launcher's failure handling."""

import contextlib
import fcntl
import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest

import mp_common
import sisa_fixtures
from jaxunlearn import cli, distributed
from jaxunlearn.lm import sharding

HERE = os.path.dirname(__file__)
SCORE_METHODS = ["reset_repair", "random_label"]  # a lane recipe with draws salted by model index; one model by model
SCORE_ARGS = ["--models", "4", "--epochs", "1", "--methods", ",".join(SCORE_METHODS)]


def _launch(part: str, out, *args: str) -> list[str]:
  lines = []
  env_path = os.environ.get("PYTHONPATH", "")
  os.environ["PYTHONPATH"] = HERE + (os.pathsep + env_path if env_path else "")
  try:
    code = distributed.launch(2, [part, str(out), *args], program=[sys.executable, os.path.join(HERE, "mp_worker.py")],
                              devices_per_process=4, timeout=600, echo=lines.append)
  finally:
    os.environ["PYTHONPATH"] = env_path
  assert code == 0, "\n".join(lines[-30:])
  return lines


@contextlib.contextmanager
def _once(tmp_path_factory, name: str):
  """A directory shared by the test session's xdist workers, and whether this worker must fill
  it: the first to take the lock does, the others wait and reuse it (each launch costs a minute)."""
  root = tmp_path_factory.getbasetemp().parent / name
  root.mkdir(exist_ok=True)
  with open(root / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    done = root / ".done"
    yield root, not done.exists()
    done.touch()


@pytest.fixture(scope="session")
def two(tmp_path_factory, digits):
  """The ``core`` part of tests/mp_worker.py in 2 processes x 4 devices, on inputs written here by
  one process."""
  job = sisa_fixtures.Job(digits[0])
  forget = [job.ids_in(0, 1)[0], job.ids_in(1, 0)[0]]  # shard 0 (process 0) from slice 1, shard 1 (process 1) from 0
  with _once(tmp_path_factory, "two_processes") as (root, fill):
    if fill:
      (root / "out").mkdir()
      job.open(root / "sisa_alone", new=True, strategy="sequential").train()
      shutil.copytree(root / "sisa_alone", root / "sisa_alone_copy")  # forgotten by the two processes
      _launch("core", root / "out", str(root / "sisa_alone_copy"), ",".join(map(str, forget)))
  return {"root": root, "out": root / "out", "job": job, "forget": forget}


@pytest.fixture(scope="session")
def two_heavy(tmp_path_factory):
  """The ``heavy`` part (LM checkpoints and recipe, ``jaxunlearn score``) in 2 processes x 4 devices."""
  with _once(tmp_path_factory, "two_processes_heavy") as (root, fill):
    if fill:
      (root / "out").mkdir()
      auto = jax.sharding.AxisType.Auto
      sharding.save_params(str(root / "lm_alone"), sharding.shard_params(
          mp_common.lm_params(), jax.make_mesh((8,), ("fsdp",), axis_types=(auto,))))
      lines = _launch("heavy", root / "out", str(root / "lm_alone"), " ".join(SCORE_ARGS))
      (root / "lines.json").write_text(json.dumps(lines))
  return {"root": root, "out": root / "out", "lines": json.loads((root / "lines.json").read_text())}


def test_data_parallel_steps_and_fit_equal_one_process(two):
  got = np.load(two["out"] / "steps.npz")
  assert int(got["processes"]) == 2 and int(got["devices"]) == 8
  # The reference: one process, the same 8-device mesh shape, the whole batch.
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  x, y, mask = mp_common.data()
  ref = mp_common.compute(distributed.global_batch({"x": x, "y": y, "mask": mask}, mesh))
  ref.update(mp_common.fitted(mesh))
  assert set(ref) == set(got.files) - {"processes", "devices"}
  for k, v in ref.items():
    np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_sisa_in_two_processes_equals_one_process_bit_for_bit(two, tmp_path):
  job, forget, root = two["job"], two["forget"], two["root"]
  shutil.copytree(root / "sisa_alone", tmp_path / "sisa_alone")  # (shared by the workers: forgotten in a copy)
  alone = job.open(tmp_path / "sisa_alone")
  trained = alone.digests()
  result = alone.forget(forget)  # the reference, in this one process with 8 devices
  forgotten = alone.digests()
  assert forgotten != trained and result.retrained == {"0": 1, "1": 0}
  for k in range(2):  # every process returns the same, and it is the one-process result
    got = json.loads((two["out"] / f"sisa_{k}.json").read_text())
    assert got["processes"] == 2
    assert got["train"] == trained
    assert got["forget"]["digests"] == forgotten
    assert got["forget"]["retrained"] == result.retrained and got["forget"]["steps"] == result.steps
    assert got["forget"]["seq"] == 1
    assert got["forget_elsewhere"] == forgotten
    assert "1 id(s) are not in the SISA plan" in got["unknown"]
    assert got["verify"] is True
    assert got["locked"].startswith("LockTimeout: ") and "gave up after 0 s" in got["locked"]
    assert got["repair"]["digests"] == forgotten and got["repair"]["retrained"] == {}  # every stage intact: reused
  # The directory written by two processes is a complete one: one process reads, checks and
  # verifies it; its manifest is the one-process directory's.
  shutil.copytree(two["out"] / "sisa_two", tmp_path / "sisa_two")
  fresh = job.open(tmp_path / "sisa_two")
  assert fresh.digests() == forgotten and fresh.verify().ok
  ours = json.loads((tmp_path / "sisa_two" / "manifest.json").read_text())
  theirs = json.loads((tmp_path / "sisa_alone" / "manifest.json").read_text())
  assert ours["stages"] == theirs["stages"] and ours["final"] == theirs["final"]
  assert ours["forgotten"] == theirs["forgotten"] == sorted(forget)
  ledger = (tmp_path / "sisa_two" / "ledger.jsonl").read_text().splitlines()
  assert len(ledger) == 1 and json.loads(ledger[0])["ids"] == sorted(forget)
  assert not fresh.status()["unreferenced"]
  assert job.open(root / "sisa_alone_copy").digests() == forgotten


@pytest.mark.slow
def test_sharded_lm_parameters_across_process_counts(two_heavy):
  two = two_heavy
  full = mp_common.lm_params()
  auto = jax.sharding.AxisType.Auto
  for k in range(2):  # a checkpoint written by this one process, read by two on two meshes
    got = json.loads((two["out"] / f"lm_{k}.json").read_text())
    for mesh in ("fsdp8", "data2_fsdp4"):
      assert got[mesh]["equal"] and got[mesh]["pieces"] > 0, (k, mesh, got)
    assert got["fsdp8"]["split_over_processes"] > 0  # pieces of one parameter lived in different processes
  # Written by two processes (each its own pieces); read back by this one on other meshes.
  flat = dict(jax.tree_util.tree_flatten_with_path(full)[0])
  for mesh in (jax.make_mesh((4,), ("fsdp",), axis_types=(auto,), devices=jax.devices()[:4]),
               jax.make_mesh((8,), ("fsdp",), axis_types=(auto,))):
    back = sharding.restore_params(str(two["out"] / "lm_two"), mesh, template=full)
    for path, arr in jax.tree_util.tree_flatten_with_path(back)[0]:
      np.testing.assert_array_equal(np.asarray(arr), flat[path], err_msg=jax.tree_util.keystr(path))
  # The LM recipe with parameters split over both processes equals this process's on the same mesh.
  want = mp_common.lm_recipe(jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(auto, auto)))
  got = np.load(two["out"] / "lm_recipe.npz")
  assert set(got.files) == set(want)
  for k, v in want.items():
    np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_score_in_two_processes_equals_one_process(two_heavy):
  two = two_heavy
  from jaxunlearn._src import score

  alone = score.run(n_models=4, epochs=1, methods=SCORE_METHODS)
  assert any(line.startswith("[0] wrote") for line in two["lines"])
  assert not any(line.startswith("[1] wrote") for line in two["lines"])  # one process writes the file
  got = json.loads((two["out"] / "score.json").read_text())
  assert got["processes"] == 2 and alone["processes"] == 1
  for name in ("retrain", "original", "retrain_ceiling", *SCORE_METHODS):
    want = alone[name] if name in alone else alone["methods"][name]
    row = got[name] if name in got else got["methods"][name]
    assert {k: v for k, v in row.items() if k != "seconds"} == {k: v for k, v in want.items() if k != "seconds"}, name


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
  with pytest.raises(SystemExit):
    cli.main(["launch", "--processes", "2"])
  assert "needs a command" in capsys.readouterr().err


def test_launch_runs_a_jaxunlearn_command_in_each_process(capsys):
  assert cli.main(["launch", "--processes", "2", "--devices-per-process", "2", "--", "methods"]) == 0
  out = capsys.readouterr().out
  assert "[0] " in out and "[1] " in out and "ssd" in out  # both joined the group, then ran the command


def test_the_cluster_flag_lets_jax_find_the_cluster(monkeypatch):
  from jaxunlearn._src import distributed as impl

  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  for name in (impl.COORDINATOR, impl.AUTO):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize_from_env() is False and calls == []
  monkeypatch.setenv(impl.AUTO, "1")
  assert distributed.initialize_from_env() is True and calls == [((), {})]  # no arguments: auto-detection
  monkeypatch.setenv(impl.AUTO, "maybe")
  with pytest.raises(ValueError, match="JAXUNLEARN_DISTRIBUTED must be 1"):
    distributed.initialize_from_env()
