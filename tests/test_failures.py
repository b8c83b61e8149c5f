"""A failed run's end: one line per failed job (slide, rule, its error line, its log), the same rows
in {outdir}/failures.csv, and a line saying a rerun retries them; a successful run removes the file."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from slidegrad import failures

from .conftest import run_snakemake
from .test_workflow import make_project


def write_log(path: Path, *lines: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def fake_job(rule: str, wildcards: dict, logs: list[str], members=None):
    """What Snakemake's scheduler records of a failed job (rule, wildcards, logs; a group's members)."""
    return SimpleNamespace(rule=SimpleNamespace(name=rule), wildcards_dict=wildcards, log=logs, jobs=members)


def fake_workflow(*jobs):
    return SimpleNamespace(scheduler=SimpleNamespace(failed=list(jobs)))  # a set in Snakemake


def test_error_message_is_the_last_slidegrad_line_else_the_last_line(tmp_path):
    log = write_log(tmp_path / "a.log", "INFO start", "slidegrad: error: first", "slidegrad: error: slide 'x': bad")
    assert failures.error_message(log) == "slide 'x': bad"
    crash = write_log(tmp_path / "b.log", "Traceback (most recent call last):", "  File ...", "MemoryError")
    assert failures.error_message(crash) == "no slidegrad error line; the log ends: MemoryError"
    assert failures.error_message(write_log(tmp_path / "c.log")).startswith("the log is empty")
    assert failures.error_message(tmp_path / "none.log").startswith("its log cannot be read (No such file")
    assert failures.error_message(None) == "the job has no log"


def test_report_lists_each_failed_job_and_writes_failures_csv(tmp_path):
    out = tmp_path / "results"
    tiles = write_log(out / "logs/tiles/s3.log", "slidegrad: error: slide 's3.tiff': cannot open it")
    summary = write_log(out / "logs/summary.log", "slidegrad: error: mask file 'm.npz' is truncated or corrupt (x)")
    ok = write_log(out / "logs/pictures/s1/chunk0000.log", "INFO done")
    bad = write_log(out / "logs/pictures/s1/chunk0001.log", "slidegrad: error: cannot write 'o.png': full")
    group = fake_job("pictures", {}, [], members=[
        fake_job("pictures", {"slide": "s1", "chunk": "chunk0000"}, [ok]),
        fake_job("pictures", {"slide": "s1", "chunk": "chunk0001"}, [bad]),
    ])  # fmt: skip
    workflow = fake_workflow(fake_job("summary", {}, [summary]), fake_job("tiles", {"slide": "s3"}, [tiles]), group)
    said: list[str] = []
    found = failures.report_failures(workflow, str(out), said.append)
    assert [f.rule for f in found] == ["summary", "pictures", "tiles"]  # by slide ("" first), then rule
    assert said == [
        f"slidegrad: 3 jobs of this run failed (listed in '{out}/failures.csv'):",
        f"slidegrad: failed: rule summary: mask file 'm.npz' is truncated or corrupt (x) (log: {summary})",
        f"slidegrad: failed: slide s1, rule pictures: cannot write 'o.png': full (log: {bad})",
        f"slidegrad: failed: slide s3, rule tiles: slide 's3.tiff': cannot open it (log: {tiles})",
        failures.RERUN_LINE,
    ]
    with open(out / "failures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(failures.FAILURE_COLUMNS)
    assert rows[2] == {"slide": "s3", "rule": "tiles", "message": "slide 's3.tiff': cannot open it", "log": tiles}
    assert not list(out.glob(".failures.csv.*"))  # written atomically: no temporary left

    failures.forget_failures(str(out))
    assert not (out / "failures.csv").exists()
    failures.forget_failures(str(out))  # nothing to remove: fine


def test_no_failed_jobs_prints_nothing_and_writes_nothing(tmp_path):
    said: list[str] = []
    assert failures.report_failures(fake_workflow(), str(tmp_path), said.append) == []
    assert said == [] and not (tmp_path / "failures.csv").exists()


def test_a_snakemake_without_the_record_says_where_the_logs_are(tmp_path):
    said: list[str] = []
    failures.report_failures(SimpleNamespace(), str(tmp_path), said.append)
    assert len(said) == 1 and said[0].startswith("slidegrad: cannot list the failed jobs (")
    assert said[0].endswith(f"see their logs under '{tmp_path}/logs'")


def test_an_unwritable_failures_csv_is_said_in_the_header_line(tmp_path):
    (tmp_path / "failures.csv").mkdir()  # cannot be replaced by a file
    log = write_log(tmp_path / "logs/tiles/s1.log", "slidegrad: error: boom")
    said: list[str] = []
    failures.report_failures(fake_workflow(fake_job("tiles", {"slide": "s1"}, [log])), str(tmp_path), said.append)
    assert said[0].startswith("slidegrad: 1 job of this run failed (not written to a file: ")
    assert said[1] == f"slidegrad: failed: slide s1, rule tiles: boom (log: {log})"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("out/masks/s1/ig/chunk0000.npz", ("masks", "out/masks/s1/ig/chunk0000.npz")),
        ("out/tiles/s1/chunk0000.npz", ("tiles", "out/tiles/s1")),
        ("out/tiles/s1/scores.npz", ("tiles", "out/tiles/s1")),
        ("out/tiles/s1.csv", ("tiles", "out/tiles/s1.csv")),
        ("out/overlays/s1/chunk0000/ig/x0_y0.png", None),
        ("out/evaluation/s1/chunk0000.npz", ("evaluate", "out/evaluation/s1/chunk0000.npz")),
        ("slides/s1.tiff", None),
    ],
)
def test_written_by_finds_the_rule_and_its_declared_output(path, expected):
    assert failures.written_by(path) == expected


@pytest.mark.workflow
def test_keep_going_with_one_unreadable_slide_ends_with_the_failed_job_and_failures_csv(tmp_path, slide_path, model_dir):
    broken = tmp_path / "broken.tiff"
    broken.write_bytes(b"II*\0" + b"not a slide" * 10)
    samples = [{"slide": s, "path": str(slide_path), "mpp": ""} for s in ("s1", "s2")]
    samples.append({"slide": "s3", "path": str(broken), "mpp": ""})
    tiles = [{"slide": s, "x": 0, "y": 0} for s in ("s1", "s2", "s3")]
    root = make_project(tmp_path / "run", slide_path, model_dir, tiles, methods=["vanilla"], samples_rows=samples)
    result = run_snakemake(root, "--keep-going")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output, output[-4000:]
    log = root / "results/logs/tiles/s3.log"
    message = failures.error_line(log)
    assert message and str(broken) in message, log.read_text()
    lines = [line for line in output.splitlines() if line.startswith("slidegrad: ") and "error:" not in line]
    assert lines == [
        "slidegrad: 1 job of this run failed (listed in 'results/failures.csv'):",
        f"slidegrad: failed: slide s3, rule tiles: {message} (log: results/logs/tiles/s3.log)",
        failures.RERUN_LINE,
    ], output[-4000:]
    with open(root / "results/failures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"slide": "s3", "rule": "tiles", "message": message, "log": "results/logs/tiles/s3.log"}]
    for slide in ("s1", "s2"):  # --keep-going: the other slides' jobs ran
        assert (root / f"results/figures/{slide}.pdf").exists()
    assert not (root / "results/tiles/s3.csv").exists()
