#!/usr/bin/env bash
# `make test`: the four pytest processes, in two lanes that run side by side.
#   lane 1: the main suite (torch; about 15 min here, using 1.35 of the 2 cores on average);
#   lane 2: tests/envs (venv builds, mostly I/O), then tests/tf, then tests/slurm.
# Torch and TensorFlow never share a process; local snakemake runs in the main suite use a
# stub scontrol (tests/conftest.py), so SLURM's controller, started by tests/slurm, does not
# reach them. Lane 2's output is printed after lane 1's. Every process runs even when an
# earlier one fails; the exit status is 1 if any failed.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
lane2_log=$(mktemp "${TMPDIR:-/tmp}/slidegrad-lane2.XXXXXX")
trap 'rm -f "$lane2_log"' EXIT
(
    status=0
    for suite in tests/envs tests/tf tests/slurm; do
        echo "== pytest $suite"
        "$PY" -m pytest -q "$suite" || status=1
    done
    exit $status
) >"$lane2_log" 2>&1 &
lane2=$!
status=0
echo "== pytest (main suite)"
"$PY" -m pytest -q --ignore=tests/tf --ignore=tests/slurm --ignore=tests/envs || status=1
wait "$lane2" || status=1
cat "$lane2_log"
exit $status
