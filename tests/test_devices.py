"""slidegrad.devices: counting GPUs without a framework, and one GPU per job by lock files.

Runs without GPUs: ``CUDA_VISIBLE_DEVICES`` and ``count`` stand in for them.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slidegrad import devices
from slidegrad.errors import InputError

from .conftest import REPO

HOLDER = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from slidegrad.devices import claim_gpu
index, handle = claim_gpu(sys.argv[1], int(sys.argv[2]))
print(index, flush=True)
sys.stdin.readline()  # hold the GPU until told to go
"""


@pytest.mark.parametrize(
    ("value", "count"),
    [("", 0), ("-1", 0), (" ", 0), ("0", 1), ("0,1", 2), ("3, 1 ,2", 3), ("GPU-8d2c1a7e,MIG-1f2e", 2), ("0,-1,1", 1)],
)
def test_cuda_visible_devices_decides_the_count(monkeypatch, value, count):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    monkeypatch.setattr(devices, "NVIDIA_GPUS", Path("/nonexistent"))
    assert devices.visible_gpu_count() == count


def test_without_cuda_visible_devices_the_driver_s_gpus_count(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "NVIDIA_GPUS", tmp_path / "gpus")
    assert devices.visible_gpu_count() == 0  # no driver
    for bus in ("0000:01:00.0", "0000:41:00.0", "0000:81:00.0"):
        (tmp_path / "gpus" / bus).mkdir(parents=True)
    assert devices.visible_gpu_count() == 3


def test_counting_imports_no_framework():
    code = (
        "import sys; from slidegrad.devices import visible_gpu_count, job_device; visible_gpu_count(); "
        "assert not {'torch', 'tensorflow'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_no_gpu_no_claim(tmp_path):
    assert devices.claim_gpu(tmp_path / "locks", 0) is None
    assert not (tmp_path / "locks").exists()
    with pytest.raises(InputError, match="count must be an integer >= 0"):
        devices.claim_gpu(tmp_path, -1)


def _start(lock_dir: Path, count: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The process's next stdout line, or None if none comes within ``timeout`` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else None


def test_each_process_claims_its_own_gpu_and_a_third_waits(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    locks = tmp_path / "gpu-locks"
    procs = []
    try:
        first = _start(locks, 2, env)
        procs.append(first)
        assert _line(first, 60) == "0"
        second = _start(locks, 2, env)
        procs.append(second)
        assert _line(second, 60) == "1"
        third = _start(locks, 2, env)
        procs.append(third)
        assert _line(third, 3) is None  # both GPUs are held: it waits
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(30) == 0  # its lock goes with the process
        assert _line(third, 30) == "0"
        second.stdin.write("\n")
        second.stdin.flush()
        third.stdin.write("\n")
        third.stdin.flush()
        assert second.wait(30) == 0 and third.wait(30) == 0
        log = third.stderr.read()
        assert log.count("are taken by other jobs; waiting") == 1, log  # logged once, not per poll
        assert "took cuda:0" in log, log
        assert first.stderr.read() == ""
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sorted(p.name for p in locks.iterdir()) == [
        f"{devices._safe(socket.gethostname())}-gpu{i}.lock" for i in (0, 1)
    ]


def test_a_closed_handle_frees_its_gpu_in_process(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    first = devices.claim_gpu(tmp_path, 2)
    second = devices.claim_gpu(tmp_path, 2)
    assert first is not None and second is not None
    assert (first[0], second[0]) == (0, 1)
    assert (tmp_path / f"{devices._safe(socket.gethostname())}-gpu0.lock").read_text() == f"{os.getpid()}\n"
    first[1].close()
    again = devices.claim_gpu(tmp_path, 2)
    assert again is not None and again[0] == 0
    again[1].close()
    second[1].close()


def test_locks_are_named_by_the_visible_device_and_the_slurm_job(tmp_path, monkeypatch):
    host = devices._safe(socket.gethostname())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-ab/cd")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    a, b = devices.claim_gpu(tmp_path, 2), devices.claim_gpu(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{host}-gpu3.lock", f"{host}-gpuGPU-ab_cd.lock"]
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    c = devices.claim_gpu(tmp_path / "slurm", 1)  # another Slurm job's cuda:0 is another GPU: not blocked
    assert c is not None and c[0] == 0
    assert [p.name for p in (tmp_path / "slurm").iterdir()] == [f"{host}-slurm4242-gpu3.lock"]
    for claim in (a, b, c):
        claim[1].close()


def test_file_systems_without_flock_fall_back_to_device_0(tmp_path, monkeypatch, caplog):
    def unsupported(*_args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(devices.fcntl, "flock", unsupported)
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        assert devices.claim_gpu(tmp_path, 4) == (0, None)
    assert "does not support file locks" in caplog.text


def test_job_device_without_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.job_device("cpu", tmp_path) == ("cpu", None)
    assert devices.job_device("auto", tmp_path) == ("cpu", None)
    assert devices.job_device("cuda", tmp_path) == ("cuda", None)  # the framework then says it has no GPU
    assert devices.job_device("cuda:1", tmp_path) == ("cuda:1", None)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="device: expected"):
        devices.job_device(None, tmp_path)  # type: ignore[arg-type]


def test_job_device_claims_a_gpu_for_auto_and_cuda(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    chosen, handle = devices.job_device("auto", tmp_path / "locks")
    chosen2, handle2 = devices.job_device("cuda", tmp_path / "locks")
    assert (chosen, chosen2) == ("cuda:0", "cuda:1")
    handle.close()
    handle2.close()
    started = time.monotonic()
    chosen, handle = devices.job_device("cuda", tmp_path / "locks")
    assert chosen == "cuda:0" and time.monotonic() - started < devices.POLL_S  # freed: no wait
    handle.close()
