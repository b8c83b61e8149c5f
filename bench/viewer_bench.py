"""`slidegrad view` speed (issue 27): Deep Zoom tile latency for the slide and a saliency layer, and
the time from request to an on-demand vanilla and IG map, each as a ratio against OpenSlide's own
``DeepZoomGenerator.get_tile`` in the same run.

    python bench/viewer_bench.py OUTDIR --config CONFIG [--workdir DIR] [--slide NAME] [--tiles 200]

It starts the real server (uvicorn, in a thread of this process, on a free port) over a finished run
with slide maps (grid mode or ``slide_map: {enabled: true}``), then over HTTP on loopback:

* ``slide tile``: ``/dzi/{slide}_files/{level}/{col}_{row}.jpeg`` for ``--tiles`` random addresses
  drawn from the top four levels (what a user at full resolution and below asks for), each asked once
  (cold: rendered by OpenSlide then JPEG-encoded);
* ``layer tile``: ``/dzi/layer/{slide}/saliency/{method}_files/{level}/{col}_{row}.png`` (the first
  saliency layer, colour map inferno, PNG with alpha) for ``--tiles`` random addresses drawn the same
  way from the top four levels of the layer's own pyramid (the map is ``cols × rows`` px, so its levels
  are fewer than the slide's), each asked once; the layer's generator is built before timing (the DZI
  request, which the page makes once per layer and colour map, is timed apart);
* ``on-demand vanilla`` / ``integrated_gradients``: ``POST /api/slides/{slide}/compute`` at random
  grid tiles (the first call, which loads the model, is reported apart);
* ``get_tile``: ``DeepZoomGenerator.get_tile`` on the same addresses, in this process (no HTTP, no JPEG).

Prints a Markdown table (median, p95 in ms; ratio = median / get_tile's median) and writes JSON beside
it with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_get(url: str, data: bytes | None = None) -> float:
    start = time.perf_counter()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
    return time.perf_counter() - start


def stats(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"n": len(ordered), "median_ms": statistics.median(ordered) * 1e3, "p95_ms": p95 * 1e3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir")
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--slide", default=None)
    parser.add_argument("--tiles", type=int, default=200)
    parser.add_argument("--ondemand", type=int, default=3, help="on-demand maps per method (after a first call)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import uvicorn

    from slidegrad.viewer.run import Run
    from slidegrad.viewer.server import create_app

    run = Run(args.outdir, config=args.config, workdir=args.workdir)
    slide = run.slide(args.slide or next(iter(run.slides)))
    method = slide.map_methods[0]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(args.seed)

    dz = run.deepzoom(slide)
    levels = list(range(max(0, dz.level_count - 4), dz.level_count))
    addresses = []
    for _ in range(args.tiles):
        level = rng.choice(levels)
        cols, rows = dz.level_tiles[level]
        addresses.append((level, rng.randrange(cols), rng.randrange(rows)))
    # get_tile in this process (a second generator, so the server's caches do not help either side)
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    direct = DeepZoomGenerator(openslide.OpenSlide(str(slide.path)), tile_size=254, overlap=1, limit_bounds=False)
    get_tile = []
    for level, col, row in addresses:
        start = time.perf_counter()
        direct.get_tile(level, (col, row))
        get_tile.append(time.perf_counter() - start)
    served = [timed_get(f"{base}/dzi/{slide.name}_files/{level}/{col}_{row}.jpeg") for level, col, row in addresses]
    layer_dzi = timed_get(f"{base}/dzi/layer/{slide.name}/saliency/{method}.dzi?cmap=inferno")  # builds the generator
    ldz = run.layer_deepzoom(slide, "saliency", method, "inferno")
    layer_levels = list(range(max(0, ldz.level_count - 4), ldz.level_count))
    layer_addresses = []
    for _ in range(args.tiles):
        level = rng.choice(layer_levels)
        cols, rows = ldz.level_tiles[level]
        layer_addresses.append((level, rng.randrange(cols), rng.randrange(rows)))
    layer = [timed_get(f"{base}/dzi/layer/{slide.name}/saliency/{method}_files/{level}/{col}_{row}.png?cmap=inferno")
             for level, col, row in layer_addresses]  # fmt: skip
    ondemand, first = {}, {}
    e = float(slide.geometry["extract_px"])
    for name in ("vanilla", "integrated_gradients"):
        times = []
        for i in range(args.ondemand + (1 if not first else 0)):
            x, y = rng.uniform(0, slide.width - e), rng.uniform(0, slide.height - e)
            body = json.dumps({"x": x, "y": y, "method": name}).encode()
            t = timed_get(f"{base}/api/slides/{slide.name}/compute", body)
            if not first:
                first = {"method": name, "seconds": t}
            else:
                times.append(t)
        ondemand[name] = times
    server.should_exit = True
    thread.join(timeout=10)

    reference = stats(get_tile)
    rows = {"get_tile (OpenSlide, in process)": reference, "slide tile (HTTP, JPEG)": stats(served),
            f"layer tile {method} (HTTP, PNG)": stats(layer)}  # fmt: skip
    rows.update({f"on-demand {name}": stats(times) for name, times in ondemand.items()})
    print(f"slide {slide.name}: {slide.width} x {slide.height} px, {dz.level_count} Deep Zoom levels; "
          f"{args.tiles} tiles from levels {levels}; layer {method}: {ldz.level_dimensions[-1][0]} x "
          f"{ldz.level_dimensions[-1][1]} px, {ldz.level_count} levels, tiles from {layer_levels}, first DZI request "
          f"(colours the map, builds the generator) {layer_dzi * 1e3:.1f} ms; "
          f"first on-demand call (loads the model): {first['seconds']:.2f} s")  # fmt: skip
    print("\n| request | n | median ms | p95 ms | median / get_tile median |\n|---|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s['n']} | {s['median_ms']:.1f} | {s['p95_ms']:.1f} | {s['median_ms'] / reference['median_ms']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"slide": slide.name, "size": [slide.width, slide.height], "rows": rows,
                                               "layer_dzi_ms": layer_dzi * 1e3, "first_ondemand": first}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
