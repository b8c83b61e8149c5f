#!/usr/bin/env bash
# `make test`: the four pytest processes. tests/envs (mostly pip's I/O building three venvs)
# runs beside the main suite (which uses 1.35 of 2 cores on average); then tests/tf, then
# tests/slurm, one after the other. Torch and TensorFlow never share a process. The SLURM
# test runs alone and last (its daemons' start and stop stay out of the other suites' way).
# tests/envs' output is printed after the main suite's. Every process runs even when an
# earlier one fails; the exit status is 1 if any failed.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
envs_log=$(mktemp "${TMPDIR:-/tmp}/slidegrad-envs.XXXXXX")
trap 'rm -f "$envs_log"' EXIT
"$PY" -m pytest -q tests/envs >"$envs_log" 2>&1 &
envs=$!
status=0
echo "== pytest (main suite)"
"$PY" -m pytest -q --ignore=tests/tf --ignore=tests/slurm --ignore=tests/envs || status=1
echo "== pytest tests/envs (ran beside the main suite)"
wait "$envs" || status=1
cat "$envs_log"
for suite in tests/tf tests/slurm; do
    echo "== pytest $suite"
    "$PY" -m pytest -q "$suite" || status=1
done
exit $status
