"""Run one rule's script the way Snakemake's ``script:`` does, in an env's venv (standard library only).

    <env venv>/bin/python run_script.py job.json

``job.json`` holds the job (the fields of the ``snakemake`` object the scripts read); this builds a
stand-in for that object, whose ``input`` / ``output`` / ``params`` / ``log`` are lists with named
entries like Snakemake's ``Namedlist``, and runs the script as ``__main__``.  Snakemake itself is
not imported: a conda env has no Snakemake either.

The outcome goes to stdout (the script sends stderr to the job's log): ``ok``, or for a missing
module the line ``env 'E': rule 'R' needs module 'M' (ModuleNotFoundError)`` and exit code 3.
"""

import json
import runpy
import sys
import traceback


class NamedList(list):
    """A list whose named entries are also attributes.  ``spec``: ``[name or None, value]`` pairs; a
    list value is spliced into the list (Snakemake flattens ``input: masks=[...]`` alike)."""

    def __init__(self, spec, flatten=True):
        items, names = [], {}
        for name, value in spec:
            if name is not None:
                names[name] = value
            if flatten and isinstance(value, list):
                items.extend(value)
            else:
                items.append(value)
        super().__init__(items)
        self._names = names

    def __getattr__(self, name):
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name, default=None):
        return self._names.get(name, default)

    def keys(self):
        return self._names.keys()


class Job:
    def __init__(self, job):
        self.input = NamedList(job["input"])
        self.output = NamedList(job["output"])
        self.params = NamedList(job["params"], flatten=False)
        self.log = NamedList(job["log"])
        self.wildcards = NamedList([[k, v] for k, v in job["wildcards"].items()])
        self.threads = job["threads"]
        self.resources = NamedList([[k, v] for k, v in job["resources"].items()])
        self.config = job["config"]
        self.rule = job["rule"]
        self.scriptdir = job["scriptdir"]
        self.bench_iteration = None


def main(path):
    with open(path) as handle:
        job = json.load(handle)
    out = sys.__stdout__
    try:
        runpy.run_path(job["script"], init_globals={"snakemake": Job(job)}, run_name="__main__")
    except ModuleNotFoundError as err:
        print(f"env {job['env']!r}: rule {job['rule']!r} needs module {err.name!r} (ModuleNotFoundError)", file=out)
        traceback.print_exc(file=out)
        return 3
    except SystemExit as err:
        if err.code not in (None, 0):
            print(f"env {job['env']!r}: rule {job['rule']!r}: the script exited with {err.code!r}", file=out)
            return 1
    except BaseException as err:  # noqa: BLE001 - every failure is the test's answer
        print(f"env {job['env']!r}: rule {job['rule']!r}: {type(err).__name__}: {err}", file=out)
        traceback.print_exc(file=out)
        return 1
    print("ok", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
