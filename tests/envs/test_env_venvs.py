"""Every conda env file runs the rules that use it: a venv from its ``pip:`` section alone runs each rule's script.

No conda channel is reachable here, so each ``envs/*.yaml`` becomes a plain venv (tests/envs/venvs.py;
built once per session, the three in parallel).  Then the workflow's jobs run one by one, each rule's
own script in the venv of its ``conda:`` env, with a ``snakemake`` object like Snakemake's
(tests/envs/run_script.py) and the params the Snakefile gives (from the same slidegrad plan):
a demo slide, the demo model (one epoch, on that slide) and its Keras twin, tiles (table and tfrecords mode in base; top_k in each model env), masks and
evaluate for a PyTorch and a Keras model, then pictures, summary, figure, slide map, prediction map,
overview, QuPath file, methods text and the evaluation table and figure.  A module an env lacks fails its rule's test with
``env 'base': rule 'summary' needs module 'pyarrow' (ModuleNotFoundError)``.

Scripts find slidegrad the way a conda run does: the scripts put ``src/`` on ``sys.path``.
Own pytest process (Makefile): about 2 min of venv builds (pip, mostly I/O) and 2 min of jobs.
"""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..conftest import REPO
from .venvs import EnvVenv, build_all, envs_dir, unpinned

RUNNER = Path(__file__).with_name("run_script.py")
MASK_BACKENDS = ("torch", "tensorflow")  # slidegrad.backends.FRAMEWORKS: MASK_ENV is envs/{framework}.yaml
# The jobs, in the order they run: (env, rule); each rule that has a script, in every env its `conda:` can name.
JOBS = [
    ("base", "demo_slide"),
    ("torch", "demo_model"),
    ("torch", "demo_vit_model"),
    ("tensorflow", "demo_keras_model"),
    ("base", "tiles"),
    ("torch", "tiles"),
    ("tensorflow", "tiles"),
    ("torch", "masks"),
    ("tensorflow", "masks"),
    ("torch", "evaluate"),
    ("tensorflow", "evaluate"),
    ("base", "pictures"),
    ("base", "summary"),
    ("base", "figure"),
    ("base", "slide_map"),
    ("base", "prediction_map"),
    ("base", "overview"),
    ("base", "methods_text"),
    ("base", "evaluation_table"),
    ("base", "qupath"),
    ("base", "evaluation_figure"),
]
SLIDE = "demo_a"
TILES = [(256, 256), (1536, 1280)]  # two rows of config/demo/tiles.csv: one chunk of two tiles
METHODS = ["vanilla"]
EVALUATE = {"metrics": ["deletion", "pointing"], "steps": 4, "ground_truth": "dab"}


def rule_envs(rules_dir: Path = REPO / "rules") -> set[tuple[str, str]]:
    """(env, rule) for every rule with a ``script:``, read from its ``conda:`` line in rules/*.smk."""
    pairs = set()
    for smk in sorted(rules_dir.glob("*.smk")):
        for block in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", smk.read_text()):
            head = re.match(r"(?:rule|checkpoint) (\w+):", block)
            conda = re.search(r"\n    conda:\n        (.+)\n", block)
            if not head or "\n    script:" not in block:
                continue
            assert conda, f"{smk.name}: rule {head.group(1)} has a script but no conda: env"
            envs = set(re.findall(r"\.\./envs/(\w+)\.yaml", conda.group(1)))
            if "MASK_ENV" in conda.group(1):
                envs |= set(MASK_BACKENDS)
            pairs |= {(env, head.group(1)) for env in envs}
    return pairs


def test_every_scripted_rule_runs_in_every_env_it_can_use():
    assert rule_envs() == set(JOBS)


def test_mask_env_is_the_framework_env():
    from slidegrad.backends import FRAMEWORKS

    assert tuple(FRAMEWORKS) == MASK_BACKENDS
    assert 'MASK_ENV = f"../envs/{PLAN.framework}.yaml"' in (REPO / "rules/common.smk").read_text()


# -- the venvs -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def venvs(tmp_path_factory) -> dict[str, EnvVenv]:
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    built = build_all(tmp_path_factory.mktemp("env-venvs"))
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\nenv venvs: {time.monotonic() - start:.0f} s wall, {used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime:.0f} s CPU")
    for venv in built.values():
        print(f"\nenv venv {venv.env}: {venv.seconds:.0f} s, {venv.size_mb:.0f} MB ({venv.root})")
    return built


@pytest.mark.parametrize("env", sorted(p.stem for p in envs_dir().glob("*.yaml")))
def test_pip_section_installs_and_pins_everything(venvs, env):
    venv = venvs[env]
    assert not venv.error, f"env {env!r}: {venv.error}"
    assert unpinned(venv) == [], f"env {env!r}: pip installed packages its pip section does not pin"


# -- the jobs --------------------------------------------------------------------------
def pairs(**named) -> list[list]:
    return [[name, value] for name, value in named.items()]


def positional(*values) -> list[list]:
    return [[None, value] for value in values]


@dataclass
class Result:
    ok: bool = True
    messages: list[str] = field(default_factory=list)


class Pipeline:
    """Builds each rule's job as the Snakefile would (same slidegrad plan and layout) and runs it."""

    def __init__(self, root: Path, venvs: dict[str, EnvVenv]):
        self.root, self.venvs = root, venvs
        self.results: dict[tuple[str, str], Result] = {}
        demo = root / "resources/demo"
        # One demo slide, and the demo model trained on it alone (the rule trains on both; half the time).
        self.slides = {"a": demo / "slides/demo_a.tiff"}
        self.models = {"torch": demo / "model", "tensorflow": demo / "model_keras"}
        self.demo = {"epochs": 1, "seed": 0}
        self.count = 0
        self.seconds: dict[tuple[str, str], float] = {}

    # configs and plans
    def config(self, backend: str, tiles: str | dict, outdir: str) -> dict:
        return {
            "samples": str(self.root / "samples.csv"),
            "tiles": tiles,
            "model": {"path": str(self.models[backend])},
            "methods": METHODS,
            "tiles_per_job": 2,
            "threads": 1,
            "outdir": str(self.root / outdir),
            "evaluate": EVALUATE,
            "demo": self.demo,
        }

    def plan(self, backend: str, mode: str = "table"):
        from slidegrad.planning import build_plan

        with open(self.root / "samples.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([["slide", "path", "mpp"], [SLIDE, str(self.slides["a"]), ""]])
        with open(self.root / "tiles.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([["slide", "x", "y"], *[[SLIDE, x, y] for x, y in TILES]])
        tiles = {
            "table": str(self.root / "tiles.csv"),
            "top_k": {"mode": "top_k", "k": 1},
            "tfrecords": {"mode": "tfrecords", "directory": str(self.root / "tfrecords"), "path": str(self.root / "tiles.csv")},
        }[mode]
        config = self.config(backend, tiles, f"results-{backend}" + ("" if mode == "table" else f"-{mode}"))
        if mode == "tfrecords":
            del config["samples"]  # the records hold the tiles
        return build_plan(config)

    # running
    def run(self, env: str, rule: str, config: dict, log: str, *, input=(), output=(), params=(), wildcards=None,
            threads: int = 1, resources=None) -> None:  # fmt: skip
        result = self.results.setdefault((env, rule), Result())
        venv = self.venvs[env]
        if venv.error:
            result.ok = False
            result.messages.append(f"env {env!r}: rule {rule!r} not run: the venv did not build")
            return
        files = [v for _, value in input for v in (value if isinstance(value, list) else [value])]
        missing = [f for f in files if not Path(f).exists()]
        if missing:
            result.ok = False
            result.messages.append(f"env {env!r}: rule {rule!r} not run: input {missing[0]} is missing (an earlier job failed)")
            return
        for _, value in [*output, [None, log]]:  # Snakemake makes the outputs' folders
            for path in value if isinstance(value, list) else [value]:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.count += 1
        job = {
            "env": env, "rule": rule, "script": str(REPO / "scripts" / f"{rule}.py"), "scriptdir": str(REPO / "scripts"),
            "input": list(input), "output": list(output), "params": list(params), "log": positional(log),
            "wildcards": wildcards or {}, "threads": threads, "resources": resources or {}, "config": config,
        }  # fmt: skip
        spec = self.root / f"job{self.count:02d}-{rule}.json"
        spec.write_text(json.dumps(job))
        env_vars = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env_vars["PATH"] = f"{venv.python.parent}{os.pathsep}{env_vars.get('PATH', '')}"
        start = time.monotonic()
        proc = subprocess.run(
            [str(venv.python), str(RUNNER), str(spec)], capture_output=True, text=True, cwd=self.root, env=env_vars, timeout=900
        )  # fmt: skip
        self.seconds[(env, rule)] = self.seconds.get((env, rule), 0.0) + time.monotonic() - start
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines[-1:] == ["ok"]:
            absent = [p for _, value in output for p in (value if isinstance(value, list) else [value]) if not Path(p).exists()]
            if absent:
                result.ok = False
                result.messages.append(f"env {env!r}: rule {rule!r} wrote no {absent[0]}")
            return
        result.ok = False
        for _, value in output:  # Snakemake deletes a failed job's outputs: its dependents do not run
            for path in map(Path, value if isinstance(value, list) else [value]):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        log_text = Path(log).read_text()[-2000:] if Path(log).exists() else ""
        detail = "\n".join(lines[1:])[-2500:] + proc.stderr[-1000:]
        result.messages.append(f"{lines[0] if lines else f'rule {rule!r} failed'}\n{detail}\n--- job log ---\n{log_text}")

    def run_all(self) -> None:
        from slidegrad.layout import Layout
        from slidegrad.methods_text import CAPTIONS
        from slidegrad.planning import model_options

        raw = self.config("torch", str(self.root / "tiles.csv"), "results-torch")
        demo_log = Layout(raw["outdir"])
        for v, path in self.slides.items():
            self.run("base", "demo_slide", raw, demo_log.log(f"demo/slide_{v}"), output=positional(str(path)),
                     wildcards={"variant": v})  # fmt: skip
        self.run("torch", "demo_model", raw, demo_log.log("demo/model"), input=positional([str(p) for p in self.slides.values()]),
                 output=positional(str(self.models["torch"])), params=pairs(**self.demo), threads=2,
                 resources={"mem_mb": 4000, "runtime": 20})  # fmt: skip
        self.run("torch", "demo_vit_model", raw, demo_log.log("demo/vit"), input=positional([str(p) for p in self.slides.values()]),
                 output=positional(str(self.root / "resources/demo/vit")), params=pairs(**self.demo), threads=2,
                 resources={"mem_mb": 4000, "runtime": 20})  # fmt: skip
        self.run("tensorflow", "demo_keras_model", raw, demo_log.log("demo/model_keras"),
                 input=positional(str(self.models["torch"])), output=positional(str(self.models["tensorflow"])))  # fmt: skip
        if not all(p.exists() for p in [*self.slides.values(), *self.models.values()]):
            for env, rule in JOBS[3:]:
                self.results.setdefault((env, rule), Result(False, [f"env {env!r}: rule {rule!r} not run: the demo jobs failed"]))
            return

        plans = {backend: self.plan(backend) for backend in MASK_BACKENDS}
        plan = plans["torch"]  # the light rules work on the PyTorch run
        layout = Layout(plan.config["outdir"])

        def tiles_job(env: str, plan) -> None:
            out = Layout(plan.config["outdir"])
            inputs = [["source", str(plan.slides[SLIDE].path)]]
            if plan.selection["mode"] == "top_k" or plan.config["tile_px"] is None or plan.config["tile_um"] is None:
                inputs.append(["model", plan.config["model"]["path"]])
            self.run(env, "tiles", plan.config, out.log(f"tiles/{SLIDE}"), input=inputs,
                     output=pairs(table=out.tile_table(SLIDE), tiles=out.tile_dir(SLIDE)),
                     params=pairs(tiles=plan.tiles_params(SLIDE)), threads=plan.config["threads"],
                     resources={"gpu": 0})  # fmt: skip

        tiles_job("base", plan)
        for backend in MASK_BACKENDS:
            tiles_job(backend, self.plan(backend, "top_k"))
        chunk = plan.static_chunks(SLIDE)[0]
        table, tile_dir = layout.tile_table(SLIDE), layout.tile_dir(SLIDE)
        if Path(tile_dir).is_dir():  # tfrecords mode (base too; it reads records with google-crc32c): the tiles as a record file
            from slidegrad.results import read_tile_chunk
            from slidegrad.tfrecords import write_tfrecord

            (self.root / "tfrecords").mkdir(exist_ok=True)
            stored = read_tile_chunk(layout.tile_chunk(SLIDE, chunk))
            tiles = [(SLIDE, int(x), int(y), image) for x, y, image in zip(stored.x, stored.y, stored.images)]
            assert [(x, y) for _, x, y, _ in tiles] == TILES
            write_tfrecord(self.root / f"tfrecords/{SLIDE}.tfrecords", tiles, fmt="png")
            tiles_job("base", self.plan("torch", "tfrecords"))

        for backend, bplan in plans.items():  # the Keras run's mask jobs read the same tiles
            cfg, out = bplan.config, Layout(bplan.config["outdir"])
            resources = {**{k: cfg["mask_resources"][k] for k in ("mem_mb", "runtime")}, "gpu": 0}
            for method in bplan.method_ids:
                self.run(backend, "masks", cfg, out.log(f"masks/{SLIDE}/{chunk}/{method}"),
                         input=pairs(table=table, tiles=tile_dir, model=cfg["model"]["path"]),
                         output=positional(out.mask_file(SLIDE, chunk, method)),
                         params=pairs(tile_file=layout.tile_chunk(SLIDE, chunk), method=bplan.mask_method(method),
                                      class_idx=cfg["model"]["class_idx"],
                                      device=cfg["device"], engine=cfg["engine"], load_options=model_options(cfg),
                                      save_raw=cfg["save_raw"]),
                         wildcards={"slide": SLIDE, "chunk": chunk, "method": method}, threads=cfg["threads"],
                         resources=resources)  # fmt: skip
            masks = [out.mask_file(SLIDE, chunk, m) for m in bplan.method_ids]
            self.run(backend, "evaluate", cfg, out.log(f"evaluate/{SLIDE}/{chunk}"),
                     input=pairs(table=table, tiles=tile_dir, model=cfg["model"]["path"], masks=masks),
                     output=pairs(table=out.evaluation_chunk(SLIDE, chunk, "csv"), curves=out.evaluation_chunk(SLIDE, chunk, "npz")),
                     params=pairs(tile_file=layout.tile_chunk(SLIDE, chunk), evaluation=bplan.evaluate_params(),
                                  method_ids=bplan.method_ids, device=cfg["device"], load_options=model_options(cfg)),
                     wildcards={"slide": SLIDE, "chunk": chunk}, threads=cfg["threads"], resources=resources)  # fmt: skip

        cfg, fig = plan.config, plan.config["figure"]
        masks = [layout.mask_file(SLIDE, chunk, m) for m in plan.method_ids]
        titles = [m.title for m in plan.figure_methods]
        self.run("base", "pictures", cfg, layout.log(f"pictures/{SLIDE}/{chunk}"),
                 input=pairs(table=table, tiles=tile_dir, masks=masks),
                 output=pairs(overlays=layout.picture_dir("overlays", SLIDE, chunk), heatmaps=layout.picture_dir("heatmaps", SLIDE, chunk)),
                 params=pairs(method_ids=plan.method_ids, limit=fig["max_tiles"], cmap=fig["cmap"], alpha=fig["alpha"]),
                 wildcards={"slide": SLIDE, "chunk": chunk})  # fmt: skip
        self.run("base", "summary", cfg, layout.log("summary"), input=positional(table, *masks),
                 output=pairs(csv=layout.summary("csv"), parquet=layout.summary("parquet")),
                 params=pairs(tables=[table], method_ids=plan.method_ids))  # fmt: skip
        self.run("base", "figure", cfg, layout.log(f"figures/{SLIDE}"), input=positional(table, tile_dir, *masks),
                 output=positional(*[layout.figure(SLIDE, ext) for ext in fig["formats"]]),
                 params=pairs(method_ids=[m.id for m in plan.figure_methods], method_titles=titles,
                              max_tiles=fig["max_tiles"], overlay=fig["overlay"], cmap=fig["cmap"], alpha=fig["alpha"],
                              dpi=fig["dpi"]),
                 wildcards={"slide": SLIDE})  # fmt: skip
        # slide maps (config slide_map; auto: off in table mode, so run here as `enabled: true` would)
        smap, slide_path, mpp = cfg["slide_map"], str(plan.slides[SLIDE].path), plan.slides[SLIDE].mpp
        method = plan.method_ids[0]
        self.run("base", "slide_map", cfg, layout.log(f"slide_map/{SLIDE}/{method}"),
                 input=pairs(table=table, tiles=tile_dir, masks=[layout.mask_file(SLIDE, chunk, method)]),
                 output=pairs(tiff=layout.slide_map(SLIDE, method, "tiff"), png=layout.slide_map(SLIDE, method, "png"),
                              npz=layout.slide_map(SLIDE, method, "npz")),
                 params=pairs(slide_path=slide_path, mpp=mpp, map_um=smap["map_um"], percentile=smap["percentile"],
                              cmap=smap["cmap"], alpha=smap["alpha"]),
                 wildcards={"slide": SLIDE, "method": method}, resources={"mem_mb": 2000})  # fmt: skip
        self.run("base", "prediction_map", cfg, layout.log(f"prediction_map/{SLIDE}"),
                 input=pairs(table=table, tiles=tile_dir, masks=[layout.mask_file(SLIDE, chunk, method)]),
                 output=pairs(npz=layout.prediction_map(SLIDE, "npz"),
                              figures=[layout.prediction_map(SLIDE, ext) for ext in fig["formats"]]),
                 params=pairs(slide_path=slide_path, mpp=mpp, method_id=method, scores=False, map_um=smap["map_um"],
                              dpi=fig["dpi"]),
                 wildcards={"slide": SLIDE}, resources={"mem_mb": 2000})  # fmt: skip
        self.run("base", "overview", cfg, layout.log(f"overview/{SLIDE}"),
                 input=pairs(table=table, tiles=tile_dir, masks=masks, slide_maps=[layout.slide_map(SLIDE, method, "npz")],
                             prediction_map=layout.prediction_map(SLIDE, "npz")),
                 output=positional(*[layout.overview(SLIDE, ext) for ext in fig["formats"]]),
                 params=pairs(slide_path=slide_path, mpp=mpp, method_ids=[method], method_titles=titles[:1], mosaic=True,
                              cmap=smap["cmap"], dpi=fig["dpi"]),
                 wildcards={"slide": SLIDE})  # fmt: skip
        chunk_csv, chunk_npz = layout.evaluation_chunk(SLIDE, chunk, "csv"), layout.evaluation_chunk(SLIDE, chunk, "npz")
        self.run("base", "evaluation_table", cfg, layout.log("evaluation"), input=positional(chunk_csv),
                 output=positional(layout.evaluation()))  # fmt: skip
        self.run("base", "methods_text", cfg, layout.log("methods_text"),
                 input=pairs(summary=layout.summary("csv"), evaluation=layout.evaluation()),
                 output=pairs(methods=layout.methods_text(), captions=[layout.caption(n) for n in CAPTIONS]),
                 params=pairs(names=list(CAPTIONS), class_idx=cfg["model"]["class_idx"], evaluate=cfg["evaluate"],
                              figure={k: fig[k] for k in ("overlay", "cmap", "alpha")}))  # fmt: skip
        self.run("base", "qupath", cfg, layout.log(f"qupath/{SLIDE}"),
                 input=pairs(summary=layout.summary("parquet"), evaluation=layout.evaluation()),
                 output=positional(layout.qupath(SLIDE)), wildcards={"slide": SLIDE})  # fmt: skip
        self.run("base", "evaluation_figure", cfg, layout.log(f"figures/evaluation/{SLIDE}"),
                 input=pairs(tables=[chunk_csv], curves=[chunk_npz]),
                 output=positional(*[layout.evaluation_figure(SLIDE, ext) for ext in fig["formats"]]),
                 params=pairs(method_ids=plan.method_ids, method_titles=[m.title for m in plan.methods], dpi=fig["dpi"]),
                 wildcards={"slide": SLIDE})  # fmt: skip


@pytest.fixture(scope="session")
def pipeline(venvs, tmp_path_factory) -> Pipeline:
    pipe = Pipeline(tmp_path_factory.mktemp("env-jobs"), venvs)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    pipe.run_all()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\njobs: {time.monotonic() - start:.0f} s wall, {used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime:.0f} s CPU; "
          + ", ".join(f"{env}/{rule} {s:.0f}" for (env, rule), s in pipe.seconds.items()))
    return pipe


@pytest.mark.parametrize("env, rule", JOBS, ids=[f"{env}-{rule}" for env, rule in JOBS])
def test_rule_runs_in_its_env(pipeline, env, rule):
    result = pipeline.results.get((env, rule))
    assert result is not None, f"env {env!r}: rule {rule!r} was never run"
    if not result.ok:
        pytest.fail("\n\n".join(result.messages), pytrace=False)
