"""SISA exact unlearning: plan, bit-exactness against an explicit retraining loop, reliability."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from jaxunlearn import data, losses, models, sisa
from jaxunlearn._src.sisa_plan import stage_seed as _stage_seed

OPT = optax.adam(1e-3)


@pytest.fixture(scope="module")
def parts(digits):
  train, test = digits
  small = train.take(train.ids[:480])
  apply, _ = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  return small, test, apply, models.init_fn("mlp", train.input_shape, 10), losses.cross_entropy_loss(apply)


def _job(parts, directory, **config):
  small, _, apply, init, loss = parts
  cfg = sisa.SisaConfig(**{"shards": 4, "slices": 3, "epochs": 4, "batch_size": 32, **config})
  return sisa.SISA(str(directory), small, init_fn=init, apply_fn=apply, loss_fn=loss, optimizer=OPT, config=cfg)


def _reference_shard(parts, cfg, shard, forgotten):
  """Retraining one shard from scratch with a plain optax loop over data.batches, stage by stage."""
  small, _, _, init, loss = parts
  shard_of, slice_of = sisa.plan(small.ids, shards=cfg.shards, slices=cfg.slices, seed=cfg.seed)
  p = init(jax.random.fold_in(jax.random.key(cfg.seed), shard))
  s = OPT.init(p)

  @jax.jit
  def step(p, s, batch):
    g = jax.grad(loss)(p, batch)
    u, s = OPT.update(g, s, p)
    return optax.apply_updates(p, u), s

  for stage in range(cfg.slices):
    ids = [int(i) for i, k, r in zip(small.ids, shard_of, slice_of) if k == shard and r <= stage and i not in forgotten]
    ds = small.take(ids)
    for epoch in range(cfg.stage_epochs):
      for batch in data.batches(ds, cfg.batch_size, seed=_stage_seed(cfg.seed, shard, stage), epoch=epoch):
        p, s = step(p, s, batch)
  return p


def test_plan_is_balanced_seeded_and_position_free(digits):
  train, _ = digits
  shard, slice_ = sisa.plan(train.ids, shards=8, slices=4, seed=3)
  counts = np.zeros((8, 4), int)
  np.add.at(counts, (shard, slice_), 1)
  assert counts.max() - counts.min() <= 1 and counts.sum() == len(train)
  perm = np.random.default_rng(0).permutation(len(train))
  shard_p, slice_p = sisa.plan(train.ids[perm], shards=8, slices=4, seed=3)
  assert np.array_equal(shard_p, shard[perm]) and np.array_equal(slice_p, slice_[perm])
  assert not np.array_equal(sisa.plan(train.ids, shards=8, slices=4, seed=4)[0], shard)


@pytest.mark.parametrize("strategy", ["sequential", "vmap"])
def test_forget_is_bit_identical_to_retraining(parts, tmp_path, strategy):
  job = _job(parts, tmp_path / "a", strategy=strategy)
  job.train()
  before = job.digests()
  shard_of, slice_of = sisa.plan(parts[0].ids, shards=4, slices=3, seed=0)
  late = int(parts[0].ids[(shard_of == 2) & (slice_of == 2)][0])  # shard 2, last slice
  rec = job.forget([late])
  assert rec["retrained"] == {"2": 2}
  steps_late = rec["steps"]
  early = [int(i) for i in parts[0].ids[(shard_of == 0) & (slice_of == 0)][:2]]
  rec = job.forget(early + [late])
  assert rec["retrained"] == {"0": 0} and rec["already_forgotten"] == [late]
  assert rec["steps"] > steps_late  # retraining from the first slice costs more than from the last
  after = job.digests()
  assert after[1] == before[1] and after[3] == before[3]  # unaffected shards untouched
  assert after[0] != before[0] and after[2] != before[2]
  # Same as a fresh directory trained without those ids, in the same mode.
  ref = _job(parts, tmp_path / "b", strategy=strategy)
  ref.train(exclude_ids=early + [late])
  assert ref.digests() == after
  final = job.final_params()
  if strategy == "sequential":
    # And the same as an independent plain training loop, array by array.
    for shard in (0, 2):
      want = _reference_shard(parts, job.config, shard, set(early + [late]))
      for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[shard], final)), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert job.verify()["ok"]
  # The ledger holds both requests, in order, with digests before and after.
  lines = [json.loads(x) for x in (tmp_path / "a" / "ledger.jsonl").read_text().splitlines()]
  assert [r["seq"] for r in lines] == [1, 2] and lines[1]["digest_after"]["0"] == after[0]
  # No checkpoint that saw a forgotten id survives: every stored checkpoint is a live one.
  manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
  live = {name for stages in manifest["stages"].values() for name, _ in stages}
  stored = {e for d in os.listdir(tmp_path / "a" / "ckpt") for e in os.listdir(tmp_path / "a" / "ckpt" / d)
            if not e.endswith(".sha256")}
  assert stored == live


def test_bad_requests_change_nothing(parts, tmp_path):
  job = _job(parts, tmp_path)
  job.train()
  manifest = (tmp_path / "manifest.json").read_bytes()
  with pytest.raises(ValueError, match=r"2 id\(s\) are not in the SISA plan.*99999"):
    job.forget([5, 99999, 100000])
  with pytest.raises(ValueError, match="no ids"):
    job.forget([])
  # Not integers: refused whole, never split into digits or truncated.
  for bad in ("17", [3.7], np.array([24.9]), [99999999999999999999], np.array([True] * 4)):
    with pytest.raises((TypeError, ValueError), match="ids"):
      job.forget(bad)
  with pytest.raises(TypeError, match="ids"):
    job.train(exclude_ids="17")
  from jaxunlearn._src.id_text import cli_ids

  assert cli_ids(" 3, 17 ,", None).tolist() == [3, 17]
  for text in ("1_9", "3.0", "17a", "0x11"):
    with pytest.raises(ValueError, match=f"--ids entry 2: .*{text}"):
      cli_ids(f"5,{text}", None)
  assert (tmp_path / "manifest.json").read_bytes() == manifest
  job.forget([5])
  assert job.forget([5])["noop"]
  with pytest.raises(FileExistsError):
    job.train()
  with pytest.raises(ValueError, match="data differs"):
    small, _, apply, init, loss = parts
    sisa.SISA(str(tmp_path), small.take(small.ids[:100]), init_fn=init, apply_fn=apply, loss_fn=loss, optimizer=OPT)


def test_corrupted_or_missing_checkpoints_are_named(parts, tmp_path):
  job = _job(parts, tmp_path)
  job.train()
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  shard_of, slice_of = sisa.plan(parts[0].ids, shards=4, slices=3, seed=0)
  victim = int(parts[0].ids[(shard_of == 1) & (slice_of == 2)][0])  # needs shard 1's stage-1 checkpoint
  name = manifest["stages"]["1"][1][0]
  before = (tmp_path / "manifest.json").read_bytes()
  ckpt = tmp_path / "ckpt" / "shard_001" / name
  # Flip bytes in every stored array file: orbax may or may not notice, the digest does.
  for root, _, files in os.walk(ckpt / "d"):
    for f in files:
      path = os.path.join(root, f)
      with open(path, "rb") as fh:
        raw = bytearray(fh.read())
      for i in range(len(raw) // 2, min(len(raw), len(raw) // 2 + 16)):
        raw[i] ^= 0xFF
      with open(path, "wb") as fh:
        fh.write(bytes(raw))
  with pytest.raises(sisa.CheckpointError, match=f"checkpoint file .*{name}/d/.* is corrupted"):
    job.forget([victim])
  assert (tmp_path / "manifest.json").read_bytes() == before
  import shutil

  shutil.rmtree(ckpt)
  with pytest.raises(sisa.CheckpointError, match=f"{name} is missing"):
    job.forget([victim])
  (tmp_path / "manifest.json").write_text("{not json")
  with pytest.raises(sisa.CheckpointError, match="manifest.json is corrupted"):
    job.forget([victim])


def test_aggregate_against_explicit_loop():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 40, 4))
  logits[:, :, 0] += rng.normal(size=(5, 40))  # some ties and near-ties in the votes
  got_vote, got_soft = sisa.aggregate(logits, "vote"), sisa.aggregate(logits, "softmax")
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  for i in range(40):
    votes = np.bincount(logits[:, i].argmax(-1), minlength=4)
    tied = np.flatnonzero(votes == votes.max())
    assert got_vote[i] == tied[np.argmax(probs[:, i].mean(0)[tied])]
    assert got_soft[i] == np.argmax(probs[:, i].mean(0))
  with pytest.raises(ValueError, match="unknown aggregation"):
    sisa.aggregate(logits, "median")


# -- the command line, in subprocesses: kill, concurrency ------------------------------------------

def _cli(*args, **kw):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.Popen([sys.executable, "-m", "jaxunlearn.cli", "sisa", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _ok(*args):
  proc = _cli(*args)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, (args, out, err)
  return out


TRAIN = ["--shards", "4", "--slices", "3", "--epochs", "30", "--batch-size", "32"]


def _slice0_ids(directory, shard, n):
  with np.load(os.path.join(directory, "plan.npz")) as z:
    return [int(i) for i in z["ids"][(z["shard"] == shard) & (z["slice"] == 0)][:n]]


@pytest.mark.slow  # 51 s on 2 cores: run with `python -m pytest -m slow`
def test_cli_sigkill_mid_forget_then_rerun(tmp_path):
  d, ref = str(tmp_path / "d"), str(tmp_path / "ref")
  _ok("train", "--dir", d, *TRAIN)
  ids = _slice0_ids(d, 1, 2) + _slice0_ids(d, 3, 1)  # two shards, each retrained from its first slice
  proc = _cli("forget", "--dir", d, "--ids", ",".join(map(str, ids)))
  # Kill as soon as the first new checkpoint is on disk, i.e. in the middle of retraining.
  before = {e for s in os.listdir(os.path.join(d, "ckpt")) for e in os.listdir(os.path.join(d, "ckpt", s))}
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    now = {e for s in os.listdir(os.path.join(d, "ckpt")) for e in os.listdir(os.path.join(d, "ckpt", s))}
    if any(e.endswith(".sha256") for e in now - before):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
  assert manifest["forgotten"] == [], "killed too late to test an interrupted forget"
  out = _ok("forget", "--dir", d, "--ids", ",".join(map(str, ids)))
  assert "forgot 3 id(s)" in out
  ids_file = tmp_path / "ids.txt"
  ids_file.write_text("\n".join(map(str, ids)) + "\n")
  _ok("train", "--dir", ref, *TRAIN, "--exclude-ids", str(ids_file))
  assert _ok("digest", "--dir", d) == _ok("digest", "--dir", ref)
  assert "verified" in _ok("verify", "--dir", d)
  assert len((tmp_path / "d" / "ledger.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow  # 46 s on 2 cores: run with `python -m pytest -m slow`
def test_cli_concurrent_forgets_are_serialised(tmp_path):
  d, ref = str(tmp_path / "d"), str(tmp_path / "ref")
  _ok("train", "--dir", d, *TRAIN[:4], "--epochs", "3", "--batch-size", "32")
  a, b = _slice0_ids(d, 0, 1), _slice0_ids(d, 2, 1)
  procs = [_cli("forget", "--dir", d, "--ids", str(a[0])), _cli("forget", "--dir", d, "--ids", str(b[0]))]
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
  ledger = [json.loads(x) for x in (tmp_path / "d" / "ledger.jsonl").read_text().splitlines()]
  assert [r["seq"] for r in ledger] == [1, 2] and sorted(r["ids"][0] for r in ledger) == sorted(a + b)
  # The second request started from the first one's result: both ids are gone.
  ids_file = tmp_path / "ids.txt"
  ids_file.write_text(f"{a[0]}\n{b[0]}\n")
  _ok("train", "--dir", ref, *TRAIN[:4], "--epochs", "3", "--batch-size", "32", "--exclude-ids", str(ids_file))
  assert _ok("digest", "--dir", d) == _ok("digest", "--dir", ref)
  status = _ok("status", "--dir", d)
  assert "2 forgotten" in status and "majority vote" in status
  bad = _cli("forget", "--dir", d, "--ids", "123456")
  _, err = bad.communicate(timeout=120)
  assert bad.returncode == 2 and "123456" in err


def test_cli_forget_refuses_another_device_count(tmp_path):
  d = str(tmp_path / "d")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  proc = subprocess.run([sys.executable, "-m", "jaxunlearn.cli", "sisa", "train", "--dir", d, "--shards", "2",
                         "--slices", "2", "--epochs", "2"], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  before = (tmp_path / "d" / "manifest.json").read_bytes()
  bad = _cli("forget", "--dir", d, "--ids", "3")  # one device here
  _, err = bad.communicate(timeout=300)
  assert bad.returncode == 2 and "trained on cpu with 2 device(s)" in err and "with 1 device(s)" in err
  assert (tmp_path / "d" / "manifest.json").read_bytes() == before


def test_cli_reloads_tfds_data_from_the_directory_given_at_training(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  from jaxunlearn import cli
  from jaxunlearn._src import loaders

  seen = []
  real = loaders.load

  def spy(name, *, data_dir=None):
    seen.append(data_dir)
    return real(name, data_dir=data_dir)

  monkeypatch.setattr(loaders, "load", spy)
  d, where = str(tmp_path / "s"), str(tmp_path / "my_tfds")
  with tfds.testing.mock_data(num_examples=24):
    assert cli.main(["sisa", "train", "--dir", d, "--dataset", "tfds:mnist", "--data-dir", where, "--shards", "2",
                     "--slices", "2", "--epochs", "1", "--batch-size", "8"]) == 0
    assert cli.main(["sisa", "forget", "--dir", d, "--ids", "3"]) == 0
    assert cli.main(["sisa", "verify", "--dir", d]) == 0
  # train, forget and verify all read the data from --data-dir (forget used to fall back to the default).
  assert seen == [where, where, where]
