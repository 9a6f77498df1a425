"""Several processes: 2 local processes x 4 simulated CPU devices (gloo collectives) give the
single-process results, and the launcher's failure handling."""

import os
import sys

import jax
import numpy as np

import mp_common
from jaxunlearn import cli, distributed

HERE = os.path.dirname(__file__)


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
  assert set(ref) == set(got.files) - {"processes", "devices"}
  for k, v in ref.items():
    np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


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
