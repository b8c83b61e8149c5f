"""``slidegrad view OUTDIR``: serve a run's slides and maps in the browser (README "Viewer")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError


def view_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="slidegrad view", description=__doc__)
    parser.add_argument("outdir", help="the run's output folder (results/)")
    parser.add_argument("--config", default=None,
                        help="the run's config file (default: config.yaml in the current folder, if any)")
    parser.add_argument("--samples", default=None, help="the sample sheet (default: the config's 'samples')")
    parser.add_argument("--model", default=None, help="model for on-demand maps (default: the config's model.path)")
    parser.add_argument("--workdir", default=None,
                        help="the folder the run's relative paths start from (default: the current folder)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    return parser  # fmt: skip


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .run import Run
    from .server import create_app, osd_dir

    config = args.config
    if config is None and Path("config.yaml").is_file():
        config = "config.yaml"
    run = Run(args.outdir, config=config, model=args.model, workdir=args.workdir, samples=args.samples)
    if osd_dir() is None:
        print("slidegrad view: OpenSeadragon is not installed (run `make install`, which runs npm ci)", file=sys.stderr)
    app = create_app(run)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))

    original = server.startup

    async def startup(sockets=None):  # print the real URL (port 0 picks one)
        await original(sockets=sockets)
        for srv in server.servers:
            for sock in srv.sockets:
                host, port = sock.getsockname()[:2]
                print(f"slidegrad view: {len(run.slides)} slide(s) of {run.outdir} at http://{host}:{port}/", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="slidegrad", description="slidegrad's command line")
    sub = parser.add_subparsers(dest="command", required=True)
    view_parser(sub.add_parser("view", help="serve a run's slides and maps in the browser"))
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except InputError as err:
        print(f"slidegrad view: {err}", file=sys.stderr)
        return 2
