"""The viewer's web server (Starlette, served by uvicorn).

Routes (every error is a JSON ``{"error": "..."}`` with 404 or 400, never a traceback page):

* ``/`` the page; ``/static/…`` its JS and CSS; ``/osd/…`` OpenSeadragon from ``node_modules``
  (``make install`` runs ``npm ci`` in this package's folder);
* ``/api/run``: slides, their layers and explained tiles; ``/api/methods``: the registry's methods;
* ``/dzi/{slide}.dzi`` and ``/dzi/{slide}_files/{level}/{col}_{row}.jpeg``: the slide as Deep Zoom,
  rendered on demand by OpenSlide's ``DeepZoomGenerator`` (no bounds: viewport x = level-0 x / width);
* ``/dzi/layer/{slide}/saliency/{method}.dzi`` and ``/dzi/layer/{slide}/prediction/{k}.dzi``
  (``?cmap=``; tiles ``…/{method}_files/{level}/{col}_{row}.png?cmap=``): a slide map, coloured as
  :func:`slidegrad.slide_map.map_rgba` does, as Deep Zoom with PNG tiles that keep the alpha
  (transparent outside tiles): OpenSlide's ``DeepZoomGenerator`` over ``openslide.ImageSlide`` of the
  RGBA map, alpha kept (:func:`slidegrad.viewer.run.rgba_deepzoom`).  Its full-resolution level has one
  pixel per map pixel (``cols × rows``).  The page places it with ``addTiledImage`` at x = y = 0 and
  width ``cols · s / W`` (``s`` = level-0 px per map pixel, ``W`` the slide's width), so map pixel
  ``c`` covers level-0 ``[c·s, (c+1)·s)`` exactly as the map's geometry says (the map's extent is the
  slide's rounded up to whole map pixels);
* ``/api/slides/{slide}/at?x=&y=``: every layer's value at a level-0 point and the explained tile there;
* ``/api/slides/{slide}/tiles/{tile}``: an explained tile's probabilities, every method's mask
  statistics and its evaluation rows; ``…/image.png``, ``…/mask/{method}.png``;
* ``POST /api/slides/{slide}/compute`` ``{"x", "y", "method"}``: the map of the grid tile under a
  level-0 point, computed on demand in a worker thread (:mod:`slidegrad.viewer.compute`);
* ``/cmap/{name}.png``: a colour map's 0 → 1 strip (the layers' legends);
* ``/files/{path}``: a file of the run's outdir (figures, tables, GeoJSON); nothing outside it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import InputError
from .compute import OnDemand
from .run import NotFound, Run, to_json, value_at

LOGGER = logging.getLogger("slidegrad.viewer")
HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
OSD_BUILD = Path("node_modules") / "openseadragon" / "build" / "openseadragon"
CMAPS = ("inferno", "viridis", "magma", "plasma", "Oranges", "coolwarm", "RdBu_r", "gray", "jet")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def osd_dir() -> Path | None:
    """OpenSeadragon's build folder: ``node_modules`` beside this package (``make install``)."""
    path = HERE / OSD_BUILD
    return path if (path / "openseadragon.min.js").is_file() else None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _cmap(request: Request, default: str) -> str:
    cmap = request.query_params.get("cmap", default)
    if cmap not in CMAPS:
        raise InputError(f"cmap {cmap!r}: expected one of {', '.join(CMAPS)}")
    return cmap


def _float(request: Request, key: str) -> float:
    try:
        value = float(request.query_params[key])
    except (KeyError, ValueError):
        raise InputError(f"query parameter {key!r}: expected a number") from None
    if not math.isfinite(value):
        raise InputError(f"query parameter {key!r}: expected a finite number")
    return value


def mask_png(mask: np.ndarray, cmap: str, image: np.ndarray | None = None) -> bytes:
    from ..plot import colormap, overlay

    if image is not None:
        rgb = overlay(image, mask, cmap=cmap, alpha=0.8)
        return _png(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    return _png(colormap(mask, cmap))


def create_app(run: Run) -> Starlette:
    """The Starlette app for ``run`` (its on-demand worker is ``app.state.ondemand``)."""
    ondemand = OnDemand(run)

    def slide_of(request: Request) -> Any:
        return run.slide(request.path_params["slide"])

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def api_run(request: Request) -> Response:
        return JSONResponse(to_json({**run.describe(), "cmaps": list(CMAPS), "methods_available": ondemand.methods()}))

    async def api_methods(request: Request) -> Response:
        return JSONResponse({"methods": ondemand.methods()})

    def dzi(request: Request) -> Response:
        slide = slide_of(request)
        return Response(run.deepzoom(slide).get_dzi("jpeg"), media_type="application/xml")

    def dzi_tile(request: Request) -> Response:
        slide = slide_of(request)
        dz = run.deepzoom(slide)
        level, address = _tile_address(request, dz)
        tile = dz.get_tile(level, address)
        buffer = io.BytesIO()
        tile.convert("RGB").save(buffer, "jpeg", quality=85)
        return Response(buffer.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def _tile_address(request: Request, dz: Any) -> tuple[int, tuple[int, int]]:
        try:
            level, col, row = (int(request.path_params[k]) for k in ("level", "col", "row"))
        except ValueError:
            raise NotFound("tile address") from None
        if not (0 <= level < dz.level_count):
            raise NotFound(f"level {level}")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise NotFound(f"tile {col}_{row} of level {level}")
        return level, (col, row)

    def layer_of(request: Request) -> Any:
        slide = slide_of(request)
        kind, key = request.path_params["kind"], request.path_params["key"]
        default = {"saliency": "inferno", "prediction": "coolwarm"}.get(kind)
        if default is None:
            raise NotFound(f"layer kind {kind!r}")
        return run.layer_deepzoom(slide, kind, key, _cmap(request, default))

    def layer_dzi(request: Request) -> Response:
        return Response(layer_of(request).get_dzi("png"), media_type="application/xml")

    def layer_tile(request: Request) -> Response:
        dz = layer_of(request)
        level, address = _tile_address(request, dz)
        buffer = io.BytesIO()
        dz.get_tile(level, address).save(buffer, "png", compress_level=1)
        return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    def at(request: Request) -> Response:
        slide = slide_of(request)
        x, y = _float(request, "x"), _float(request, "y")
        values: dict[str, Any] = {}
        for method in slide.map_methods:
            shown, raw, g = run.saliency_map(slide, method)
            values[method] = {"value": value_at(shown, g, x, y), "raw": value_at(raw, g, x, y)}
        if slide.classes:
            pred = run.prediction(slide.name)
            for k, label in enumerate(slide.classes):
                values[f"p({label})"] = {"value": value_at(pred.maps[k], pred.geometry, x, y)}
        tile = run.tile_at(slide, x, y)
        return JSONResponse(to_json({"x": x, "y": y, "values": values, "tile": tile}))

    def tile_info(request: Request) -> Response:
        slide = slide_of(request)
        tile = run.tile(slide, request.path_params["tile"])
        masks = run.masks(slide, tile)
        methods = {}
        for method, entry in masks.items():
            rec = entry["record"]
            keys = ("class_idx", "class_label", "probability", "mask_mean", "mask_max", "top10_mass", "completeness_error")
            methods[method] = {k: rec.get(k) for k in keys}
        evaluation = run.evaluation.get((slide.name, tile["tile"]), [])
        return JSONResponse(to_json({**tile, "methods": methods, "evaluation": evaluation}))

    def tile_image(request: Request) -> Response:
        slide = slide_of(request)
        tile = run.tile(slide, request.path_params["tile"])
        image = run.tile_image(slide, tile)
        return Response(_png(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])), media_type="image/png")

    def tile_mask(request: Request) -> Response:
        slide = slide_of(request)
        tile = run.tile(slide, request.path_params["tile"])
        method = run.method(slide, request.path_params["method"])
        masks = run.masks(slide, tile)
        if method not in masks:
            raise NotFound(f"mask of {tile['tile']!r} for {method!r}")
        image = run.tile_image(slide, tile) if request.query_params.get("overlay") == "1" else None
        return Response(mask_png(masks[method]["mask"], _cmap(request, "inferno"), image), media_type="image/png")

    async def compute(request: Request) -> Response:
        slide = slide_of(request)
        try:
            body = await request.json()
        except ValueError:
            raise InputError("compute: the body must be JSON {x, y, method}") from None
        if not isinstance(body, dict):
            raise InputError("compute: the body must be JSON {x, y, method}")
        method = body.get("method")
        if method not in ondemand.methods():
            raise InputError(f"compute: unknown method {method!r}; expected one of {', '.join(ondemand.methods())}")
        try:
            x, y = float(body.get("x")), float(body.get("y"))
        except (TypeError, ValueError):
            raise InputError("compute: x and y must be level-0 numbers") from None
        if run.model_path is None:
            raise InputError("compute: no model (start the viewer with --model or the run's --config)")
        x0, y0, e = ondemand.tile_box(slide, x, y)
        cmap = body.get("cmap", "inferno")
        if cmap not in CMAPS:
            raise InputError(f"cmap {cmap!r}: expected one of {', '.join(CMAPS)}")
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(ondemand.pool, ondemand.compute, slide, x0, y0, method)
        encoded = {
            key: "data:image/png;base64," + base64.b64encode(png).decode()
            for key, png in (("mask_png", mask_png(result["mask"], cmap)), ("overlay_png", mask_png(result["mask"], cmap, result["image"])),
                             ("tile_png", _png(np.dstack([result["image"], np.full(result["image"].shape[:2], 255, np.uint8)]))))
        }  # fmt: skip
        payload = {
            "slide": slide.name, "x": x0, "y": y0, "size": e, "method": method, "seconds": result["seconds"],
            "class_idx": result["class_idx"], "class_label": result["class_label"], "labels": result["labels"],
            "probabilities": result["probabilities"], "mask": result["mask"], **encoded,
        }  # fmt: skip
        return JSONResponse(to_json(payload))

    def cmap_strip(request: Request) -> Response:
        from ..plot import colormap

        name = request.path_params["name"]
        if name not in CMAPS:
            raise NotFound(f"colour map {name!r}")
        return Response(_png(colormap(np.tile(np.linspace(0, 1, 128, dtype=np.float32), (8, 1)), name)), media_type="image/png")

    def files(request: Request) -> Response:
        return FileResponse(run.output_file(request.path_params["path"]))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"not found: {exc}")

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc).splitlines()[0] if str(exc) else "bad request")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, exc.detail or "error")

    async def server_error(request: Request, exc: Exception) -> Response:
        LOGGER.exception("viewer: %s %s failed", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    routes = [
        Route("/", index),
        Route("/api/run", api_run),
        Route("/api/methods", api_methods),
        Route("/dzi/{slide}.dzi", dzi),
        Route("/dzi/{slide}_files/{level}/{col}_{row}.jpeg", dzi_tile),
        Route("/dzi/layer/{slide}/{kind}/{key}.dzi", layer_dzi),
        Route("/dzi/layer/{slide}/{kind}/{key}_files/{level}/{col}_{row}.png", layer_tile),
        Route("/api/slides/{slide}/at", at),
        Route("/api/slides/{slide}/tiles/{tile}", tile_info),
        Route("/api/slides/{slide}/tiles/{tile}/image.png", tile_image),
        Route("/api/slides/{slide}/tiles/{tile}/mask/{method}.png", tile_mask),
        Route("/api/slides/{slide}/compute", compute, methods=["POST"]),
        Route("/cmap/{name}.png", cmap_strip),
        Route("/files/{path:path}", files),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    osd = osd_dir()
    if osd is not None:
        routes.append(Mount("/osd", StaticFiles(directory=osd), name="osd"))
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        ondemand.close()

    app = Starlette(
        routes=routes,
        exception_handlers={
            NotFound: not_found, InputError: bad_request, HTTPException: http_error, Exception: server_error,
        },  # fmt: skip
        lifespan=lifespan,
    )
    app.state.run = run
    app.state.ondemand = ondemand
    return app
