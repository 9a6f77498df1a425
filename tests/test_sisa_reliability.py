"""SISA around its core: what a fault-injection run and a new user's trial found, one test per
finding (each fails on the code before its fix)."""

import json
import os
import shutil
import threading

import jax
import optax
import pytest

from jaxunlearn import sisa
from sisa_fixtures import array_files, check_invariants, copy_of, flip_bytes, read, stage_name, write


@pytest.fixture
def fresh(sisa_base, tmp_path):
  return copy_of(sisa_base, tmp_path / "d")


# -- 4. verify and digest read the disk --------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_verify_and_digest_read_every_live_checkpoint(job_maker, fresh, tmp_path, damage):
  job = job_maker.open(fresh)
  victim = job_maker.ids_in(0, 1)
  job.forget(victim)
  assert job.verify()["ok"]
  name = stage_name(fresh, 0, 1)  # the final checkpoint of the shard that forgot
  if damage == "truncate":
    path = max(array_files(fresh, 0, name), key=os.path.getsize)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    shutil.rmtree(os.path.join(fresh, "ckpt", "shard_000", name))
  result = job.verify()
  assert not result["ok"] and not result["shards"]["0"]
  assert any(name in p for p in result["problems"]), result["problems"]
  with pytest.raises(sisa.CheckpointError, match=name):
    job.digests()
  # An unaffected shard's damaged early stage is found too (verify reads every stage, not only finals).
  other = stage_name(fresh, 2, 0)
  flip_bytes(array_files(fresh, 2, other)[-1])
  assert any(other in p and "shard 2 stage 0" in p for p in job.verify()["problems"])


def test_verify_does_not_call_a_diverged_model_verified(job_maker, tmp_path):
  job = job_maker.open(tmp_path / "nan", new=True, optimizer=optax.sgd(1e30))
  job.train()
  result = job.verify()
  assert not result["ok"] and any("non-finite" in p for p in result["problems"])


# -- 5. the configuration is sealed; forget refuses another platform ------------------------------

def test_edited_config_is_refused(job_maker, fresh):
  path = os.path.join(fresh, "config.json")
  config = json.loads(read(path))
  for edit in ({"learning_rate": 0.5}, {"shards": 2}, {"epochs": 9}):
    edited = dict(config, sisa=dict(config["sisa"], **edit))
    write(path, json.dumps(edited))
    with pytest.raises(sisa.CheckpointError, match="config.json was modified after training"):
      job_maker.open(fresh)
  write(path, json.dumps(dict(config, excluded_at_train=[1])))
  with pytest.raises(sisa.CheckpointError, match="modified after training"):
    job_maker.open(fresh)
  write(path, json.dumps(config))
  job_maker.open(fresh).status()


def test_forget_refuses_another_device_count_or_jax(job_maker, fresh):
  job = job_maker.open(fresh)
  before = read(os.path.join(fresh, "manifest.json"))
  for key, value in (("devices", 1), ("jax", "0.0.1"), ("backend", "tpu")):
    job._stored = dict(job_maker.open(fresh)._stored, **{key: value})
    with pytest.raises(ValueError, match=r"forget is exact only on the backend, device count and jax version"):
      job.forget(job_maker.ids_in(1, 0))
    with pytest.raises(ValueError, match="repair is exact only"):
      job.repair()
  assert read(os.path.join(fresh, "manifest.json")) == before


# -- 6. stray entries, cleanup pending --------------------------------------------------------------

def test_entries_we_do_not_own_are_left_alone_and_listed(job_maker, fresh, tmp_path):
  ckpt = os.path.join(fresh, "ckpt")
  write(os.path.join(ckpt, ".DS_Store"), "x")
  shutil.copytree(os.path.join(ckpt, "shard_000"), os.path.join(ckpt, "shard_000.bak"))
  write(os.path.join(ckpt, "shard_001", "notes.txt"), "mine")
  os.makedirs(os.path.join(ckpt, "shard_099"))
  job = job_maker.open(fresh)
  ids = job_maker.ids_in(0, 0) + job_maker.ids_in(1, 1)
  record = job.forget(ids)
  assert record["cleanup_pending"] is None
  for stray in (".DS_Store", "shard_000.bak", "shard_001/notes.txt", "shard_099"):
    assert os.path.exists(os.path.join(ckpt, stray)), stray
  status = job.status()
  assert sorted(os.path.relpath(p, ckpt) for p in status["not_ours"]) == [
      ".DS_Store", "shard_000.bak", "shard_001/notes.txt", "shard_099"]
  shutil.rmtree(os.path.join(ckpt, "shard_000.bak"))
  check_invariants(job_maker, fresh, ids, tmp_path)


def test_failed_sweep_is_committed_cleanup_pending_and_finished_by_the_next_command(job_maker, fresh, tmp_path,
                                                                                      monkeypatch):
  job = job_maker.open(fresh)
  ids = job_maker.ids_in(2, 0)
  real_rmtree = shutil.rmtree
  monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied", a[0])))
  with pytest.warns(sisa.SisaWarning, match=r"request #1 committed; cleanup pending: PermissionError"):
    record = job.forget(ids)
  assert record["cleanup_pending"] and record["ids"] == ids
  stale = job.store.unreferenced(json.loads(read(os.path.join(fresh, "manifest.json"))))
  assert stale  # the checkpoints that saw the forgotten id are still there ...
  with pytest.warns(sisa.SisaWarning, match="not referenced by the manifest and may hold forgotten ids"):
    job.status()  # ... and every command says so while they remain
  monkeypatch.setattr(shutil, "rmtree", real_rmtree)
  for command in ("status", "digests", "verify"):
    copy = copy_of(fresh, tmp_path / command)
    getattr(job_maker.open(copy), command)()  # the next command of any kind finishes the sweep
    assert not any(os.path.exists(p.replace(fresh, copy)) for p in stale), command
  job_maker.open(fresh).status()
  check_invariants(job_maker, fresh, ids, tmp_path)


# -- 8. deletions are never undone ----------------------------------------------------------------

def test_deleted_manifest_train_refuses_and_repair_keeps_the_ledger(job_maker, fresh, tmp_path):
  job = job_maker.open(fresh)
  first, second = job_maker.ids_in(0, 1), job_maker.ids_in(1, 0)
  job.forget(first)
  os.remove(os.path.join(fresh, "manifest.json"))
  with pytest.raises(sisa.CheckpointError, match="manifest.json is missing.*Do not retrain.*sisa repair"):
    job.status()
  with pytest.raises(FileExistsError, match="ledger of deletion requests.*bring the deleted examples back.*repair"):
    job.train()
  out = job.repair()
  assert out["forgotten"] == 1 and out["retrained"] == {}  # every checkpoint intact: nothing retrained
  check_invariants(job_maker, fresh, first, tmp_path)
  # A later request is logged (the old code compared sequence numbers and dropped it).
  record = job.forget(second)
  assert record["seq"] == 2
  ledger = [json.loads(x) for x in read(os.path.join(fresh, "ledger.jsonl")).splitlines()]
  assert [r["ids"] for r in ledger] == [first, second]
  check_invariants(job_maker, fresh, first + second, tmp_path)


def test_restoring_an_older_manifest_does_not_revert_deletions(job_maker, fresh, tmp_path):
  job = job_maker.open(fresh)
  old = read(os.path.join(fresh, "manifest.json"))
  ids = job_maker.ids_in(2, 1, 2)
  job.forget(ids)
  write(os.path.join(fresh, "manifest.json"), old)  # a backup restored over the live one
  for command in (job.status, job.final_params, job.digests, lambda: job.forget(job_maker.ids_in(0, 0))):
    with pytest.raises(sisa.CheckpointError, match=r"does not forget 2 id\(s\) that the ledger records"):
      command()
  job.repair()
  check_invariants(job_maker, fresh, ids, tmp_path)


def test_ledger_torn_last_line_is_reconstructed(job_maker, fresh, tmp_path):
  job = job_maker.open(fresh)
  a, b = job_maker.ids_in(0, 0), job_maker.ids_in(1, 1)
  job.forget(a)
  path = os.path.join(fresh, "ledger.jsonl")
  line = read(path)
  write(path, line[: len(line) // 2])  # a crash mid-append: a torn first record
  job.forget(b)
  records = [json.loads(x) for x in read(path).splitlines()]
  assert [r["ids"] for r in records] == [b, a] or [r["ids"] for r in records] == [a, b]
  check_invariants(job_maker, fresh, a + b, tmp_path)
  # A whole record whose newline was lost: kept, and the next record starts on a line of its own.
  c = job_maker.ids_in(2, 0)
  write(path, read(path).rstrip("\n"))
  job.forget(c)
  assert sorted(json.loads(x)["ids"][0] for x in read(path).splitlines()) == sorted(a + b + c)
  check_invariants(job_maker, fresh, a + b + c, tmp_path)
  write(path, "{broken\n" + read(path))
  with pytest.raises(sisa.CheckpointError, match=r"ledger.jsonl:1 is corrupted"):
    job.status()


# -- 9. clear errors ------------------------------------------------------------------------------

def test_clear_errors_name_the_file(job_maker, fresh, tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(ValueError, match="is a file, not a SISA directory"):
    job_maker.open(a_file, new=True)
  with pytest.raises(sisa.CheckpointError, match="file/sub/config.json cannot be read: Not a directory"):
    job_maker.open(a_file / "sub", new=True).train()
  for value in (float("nan"), -1.0, 0.0, float("inf")):
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
      sisa.SisaConfig(learning_rate=value).validate()
  config = os.path.join(fresh, "config.json")
  text = read(config)
  write(config, text[: len(text) // 2])
  with pytest.raises(sisa.CheckpointError, match=r"config.json is corrupted \(not valid JSON"):
    job_maker.open(fresh)
  write(config, text)
  plan = os.path.join(fresh, "plan.npz")
  raw = read(plan, "rb")
  write(plan, raw[: len(raw) // 2])
  with pytest.raises(sisa.CheckpointError, match="plan.npz is corrupted or was replaced"):
    job_maker.open(fresh).forget(job_maker.ids_in(0, 0))
  write(plan, raw)
  os.remove(os.path.join(fresh, ".lock")) if os.path.exists(os.path.join(fresh, ".lock")) else None
  os.makedirs(os.path.join(fresh, ".lock"))
  with pytest.raises(sisa.CheckpointError, match=r"\.lock is a directory"):
    job_maker.open(fresh).forget(job_maker.ids_in(0, 0))


# -- 10. shards with nothing left -----------------------------------------------------------------

def test_a_shard_with_every_example_forgotten_does_not_vote(job_maker, fresh, tmp_path, digits):
  job = job_maker.open(fresh)
  shard0 = [int(i) for i in job_maker.data.ids[job_maker.shard_of == 0]]
  record = job.forget(shard0)
  assert record["remaining"] == len(job_maker.data) - len(shard0)
  assert job.live_shards() == [1, 2] and job.status()["live_shards"] == [1, 2]
  test_x = digits[1].x[:20]
  logits = job.logits(test_x)
  assert logits.shape == (2, 20, 10)
  params = job.final_params()
  assert params["layers"] is not None if isinstance(params, dict) and "layers" in params else True
  assert all(x.shape[0] == 2 for x in jax.tree.leaves(params))
  rest = [int(i) for i in job_maker.data.ids if int(i) not in set(shard0)]
  record = job.forget(rest)
  assert record["remaining"] == 0 and job.live_shards() == []
  with pytest.raises(ValueError, match="every training example .* has been forgotten: no model remains"):
    job.logits(test_x)
  assert job.verify()["ok"]


# -- 11, 12. locks: who holds them; readers during a forget ----------------------------------------

def test_a_waiting_writer_is_told_who_holds_the_lock(job_maker, fresh, capfd):
  holder = job_maker.open(fresh)
  entered, release = threading.Event(), threading.Event()

  def hold():
    with holder.store.locked():
      entered.set()
      release.wait(30)

  t = threading.Thread(target=hold)
  t.start()
  entered.wait(30)
  try:
    with pytest.raises(sisa.LockTimeout, match=rf"held by process {os.getpid()} .* since 20.*gave up after 0.3 s"):
      job_maker.open(fresh).forget(job_maker.ids_in(0, 0), wait=0.3)
    assert "waiting for" in capfd.readouterr().err
  finally:
    release.set()
    t.join()
  assert job_maker.open(fresh).forget(job_maker.ids_in(0, 0), wait=0.3)["noop"] is False


def test_readers_during_forgets_never_meet_a_deleted_checkpoint(job_maker, fresh, tmp_path, digits):
  ids = [job_maker.ids_in(k, r)[0] for k in range(3) for r in range(2)]
  errors, done = [], threading.Event()

  def writer():
    try:
      for i in ids:
        job_maker.open(fresh).forget([i])
    except Exception as err:  # pragma: no cover - reported below
      errors.append(err)
    finally:
      done.set()

  t = threading.Thread(target=writer)
  t.start()
  reads = 0
  reader = job_maker.open(fresh)
  while not done.is_set() or reads == 0:
    reader.logits(digits[1].x[:4])
    reader.digests()
    reads += 1
  t.join()
  assert not errors and reads > 1
  check_invariants(job_maker, fresh, ids, tmp_path)


# -- 13. repair a damaged checkpoint a deletion needs ---------------------------------------------

def test_repair_retrains_from_the_last_intact_stage(job_maker, fresh, tmp_path):
  job = job_maker.open(fresh)
  victim = job_maker.ids_in(1, 1)  # forgetting it restores shard 1's stage-0 checkpoint
  name = stage_name(fresh, 1, 0)
  flip_bytes(array_files(fresh, 1, name)[-1])
  before = read(os.path.join(fresh, "manifest.json"))
  with pytest.raises(sisa.CheckpointError, match=f"{name}.* is corrupted"):
    job.forget(victim)
  assert read(os.path.join(fresh, "manifest.json")) == before
  out = job.repair()
  assert out["retrained"] == {"1": 0} and out["reused"] == 4
  job.forget(victim)
  check_invariants(job_maker, fresh, victim, tmp_path)
  # Damage a later stage only: repair reuses the intact stage 0 and retrains from stage 1.
  name = stage_name(fresh, 2, 1)
  os.remove(os.path.join(fresh, "ckpt", "shard_002", name + ".sha256"))
  assert job.repair()["retrained"] == {"2": 1}
  check_invariants(job_maker, fresh, victim, tmp_path)
  assert job.status()["repairs"][-1]["retrained"] == {"2": 1}


def test_results_are_typed_with_the_same_fields_on_a_noop(job_maker, fresh):
  job = job_maker.open(fresh)
  ids = job_maker.ids_in(1, 0)
  done, again = job.forget(ids), job.forget(ids)
  assert isinstance(done, sisa.ForgetResult) and isinstance(again, sisa.ForgetResult)
  assert done.keys() == again.keys() and again.noop and not done.noop
  assert (again.retrained, again.steps, again.already_forgotten) == ({}, 0, ids)
  assert done["seq"] == done.seq == 1 and done.remaining == len(job_maker.data) - 1
  assert json.loads(json.dumps(done.as_dict()))["ids"] == ids
  result = job.verify()
  assert isinstance(result, sisa.VerifyResult) and result.ok and result["shards"] == {"1": True}


def test_a_read_only_copy_can_be_read_without_lock_files(job_maker, fresh, monkeypatch, digits):
  job_maker.open(fresh).forget(job_maker.ids_in(0, 0))
  for name in (".lock", ".switch"):
    if os.path.exists(os.path.join(fresh, name)):
      os.remove(os.path.join(fresh, name))
  real_access = os.access
  # Root bypasses permissions here, so read-only is simulated where the library asks.
  monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode == os.W_OK else real_access(p, mode, **k))
  job = job_maker.open(fresh)
  assert job.logits(digits[1].x[:3]).shape == (3, 3, 10) and len(job.digests()) == 3 and job.status()
  assert not os.path.exists(os.path.join(fresh, ".lock")) and not os.path.exists(os.path.join(fresh, ".switch"))
