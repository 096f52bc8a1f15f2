"""The HTTP API and the page: `create_app(model)` -> a FastAPI application.

POST /v1/predict (images: multipart `file` fields or a raw image body), POST /v1/predict/pixels
(JSON arrays), GET /v1/model and /v1/model/card (what the model is), GET /healthz, /readyz,
/metrics (Prometheus), GET / (the page), /docs (OpenAPI). Pictures go through the same pipeline
as `fashionnet predict` (images.prepare), so the server and the CLI always agree. The server keeps
no state between requests: replicas behind a load balancer need nothing shared.
"""

import base64
import gc
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, StrictFloat
from starlette.concurrency import run_in_threadpool

from .._fsutil import open_regular
from .._version import __version__
from ..classify import LoadedModel, open_model, through, top_classes
from ..data import DataError, to_float
from ..data.photos import prepare
from ..model import tta_of
from .batcher import Batcher
from .limits import BodyLimit, status_of
from .metrics import Metrics, MetricsMiddleware
from .page import PAGE

MAX_CARD_BYTES = 1 << 20  # a model card is a few kilobytes
INLINE_BYTES = 64 << 10  # a picture this small is decoded on the event loop; larger, on a thread
IMAGE_TYPES = ("image/", "application/octet-stream")


class Pixels(BaseModel):
    """Images as rows of pixel values 0..255, each row one image (h*w values, row by row)."""

    model_config = ConfigDict(extra="forbid")
    pixels: list[list[StrictFloat]]  # a number: true or "5" is a client's mistake, not 1 or 5


def _model_id(path: Path | None) -> str:
    if path is None or not path.is_file():
        return "in-memory"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.parent.name if path.name == 'model.npz' else path.stem}@{digest}"


def _read_card(path: Path) -> str | None:
    """The model card beside the model, read once at startup: a regular file of at most
    MAX_CARD_BYTES and not a link, since a run folder from elsewhere could link MODEL_CARD.md to
    any file the server may read and /v1/model/card would hand it to every client."""
    try:
        with open_regular(path, follow_links=False) as f:
            raw = f.read(MAX_CARD_BYTES + 1)
    except OSError:  # none, a link, a FIFO or a folder: the model has no card to show
        return None
    return raw.decode(errors="replace") if len(raw) <= MAX_CARD_BYTES else None


def create_app(
    source: str | os.PathLike[str] | LoadedModel,
    *,
    max_batch: int = 64,
    max_wait_ms: float = 5.0,
    max_upload_mb: float = 10.0,
    max_images: int = 64,
    blas_threads: int | None = None,
    tta: str = "model",
) -> FastAPI:
    """The application serving `source` (a model file, a run folder, or a LoadedModel).
    `blas_threads` limits the BLAS threads of this whole process (threadpoolctl): measured,
    one thread a worker serves 2x the requests of two (BENCHMARKS.md). `tta`: the views each
    prediction averages (classify.through)."""
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        threadpool_limits(blas_threads, user_api="blas")
    path = None if isinstance(source, LoadedModel) else Path(source)
    if path is not None and path.is_dir():
        path = path / "model.npz"
    loaded = open_model(source if path is None else path)
    model = through(loaded.model, tta, loaded.image_shape)
    shape, names = loaded.image_shape, loaded.class_names
    model_id = _model_id(path)
    card = _read_card(path.parent / "MODEL_CARD.md") if path is not None else None
    metrics = Metrics()
    batcher = Batcher(lambda images: model.predict_proba(to_float(images)),
                      max_batch=max_batch, max_wait=max_wait_ms / 1000)  # fmt: skip
    batcher.on_batch = metrics.batch_sizes.observe
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        await batcher(np.zeros((1, *shape), np.uint8))  # warm-up: the first pass is the slowest
        # what exists now lives as long as the server: out of the collector's sight, a full
        # collection no longer walks it (measured with ab: p99 53-60 ms -> 22 ms, BENCHMARKS.md)
        gc.collect()
        gc.freeze()
        state["ready"] = True
        yield
        await batcher.stop()

    app = FastAPI(title="fashionnet", version=__version__, lifespan=lifespan,
                  description="Classify photos of clothes with a fashionnet model.")  # fmt: skip
    app.add_middleware(BodyLimit, max_bytes=int(max_upload_mb * (1 << 20)))
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too

    async def picture(raw: bytes, name: str) -> np.ndarray:
        if len(raw) == 0:
            raise HTTPException(422, f"{name}: empty; expected an image")
        try:
            if len(raw) <= INLINE_BYTES:
                return prepare(raw, shape, name=name)
            return await run_in_threadpool(prepare, raw, shape, name=name)
        except DataError as e:
            raise HTTPException(status_of(str(e)), str(e)) from None

    def answer(labels: list[str], images: np.ndarray, probs: np.ndarray, top_k: int,
               view: bool) -> Response:  # fmt: skip
        """The JSON response, built here: FastAPI's own encoding of a returned dict costs more
        than the model's forward pass for one image."""
        found = top_classes(probs, names, top_k)
        out = []
        for i, (label, picks) in enumerate(zip(labels, found, strict=True)):
            item: dict[str, Any] = {"input": label, "top": [
                {"class": p["label"], "probability": p["score"]} for p in picks]}  # fmt: skip
            if view:
                item["view"] = _png_data_url(images[i])
            out.append(item)
        body = json.dumps({"predictions": out, "model": model_id}).encode()
        return Response(body, media_type="application/json")

    TopK = Annotated[int, Query(ge=1, le=len(names), description="how many classes per image")]

    def query(request: Request) -> tuple[int, bool]:
        """top_k and view, read by hand: FastAPI's parameter machinery costs more per request
        than decoding a 28x28 PNG (they are declared for the OpenAPI docs below)."""
        params = request.query_params
        unknown = sorted(set(params) - {"top_k", "view"})
        if unknown:
            raise HTTPException(422, f"unknown query parameter {unknown[0]!r} (top_k, view)")
        text = params.get("top_k", "1")
        if not text.isdigit() or not 1 <= int(text) <= len(names):
            raise HTTPException(422, f"top_k={text}: expected 1..{len(names)}")
        view = params.get("view", "false").lower()
        if view not in ("true", "false", "1", "0"):
            raise HTTPException(422, f"view={view}: expected true or false")
        return int(text), view in ("true", "1")

    docs = {"parameters": [
        {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1,
         "maximum": len(names), "default": 1}, "description": "classes per image"},
        {"name": "view", "in": "query", "schema": {"type": "boolean", "default": False},
         "description": "also return the 28x28 view the model saw, as a PNG data URL"},
    ], "requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {
            "type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}  # fmt: skip

    @app.post("/v1/predict", openapi_extra=docs,
              summary="classify images (multipart `file` fields, or a raw image body)")  # fmt: skip
    async def predict(request: Request) -> Response:
        top_k, view = query(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        batcher.coming += 1  # the batch being gathered may wait for this one
        try:
            if kind == "multipart/form-data":
                labels, raws = await _multipart(request, max_images)
            elif kind.startswith(IMAGE_TYPES):
                labels, raws = ["body"], [await request.body()]
            else:
                raise HTTPException(415, f"content type {kind or 'missing'}: expected "
                                    "multipart/form-data with `file` fields, or an image body "
                                    "(image/png, image/jpeg, ...)")  # fmt: skip
            pairs = zip(labels, raws, strict=True)
            images = np.stack([await picture(raw, label) for label, raw in pairs])
        finally:
            batcher.coming -= 1  # no await from here to the queue: the count stays true
        return answer(labels, images, await batcher(images), top_k, view)

    @app.post("/v1/predict/pixels", summary="classify images given as arrays of 0..255 values")
    async def predict_pixels(body: Pixels, top_k: TopK = 1) -> Response:
        n_pixels = shape[0] * shape[1]
        if not 1 <= len(body.pixels) <= max_images:
            raise HTTPException(413 if body.pixels else 422,
                                f"{len(body.pixels)} images; send 1 to {max_images}")  # fmt: skip
        for i, row in enumerate(body.pixels):
            if len(row) != n_pixels:
                raise HTTPException(422, f"pixels[{i}]: {len(row)} values, expected {n_pixels} "
                                    f"({shape[0]}x{shape[1]}, row by row)")  # fmt: skip
        a = np.asarray(body.pixels, dtype=np.float64)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
            raise HTTPException(422, "pixels: values must be numbers from 0 to 255")
        images = a.round().astype(np.uint8).reshape(len(a), *shape)
        labels = [f"pixels[{i}]" for i in range(len(images))]
        return answer(labels, images, await batcher(images), top_k, False)

    @app.get("/v1/model", summary="what the model is: classes, input, metrics, configuration")
    async def model_facts() -> dict[str, Any]:
        meta = loaded.metadata
        return {"id": model_id, "class_names": list(names),
                "input": {"image_shape": list(shape), "range": "0..255", "channels": 1,
                          "photos": "framed as the training images (docs/photos.md)"},
                "metrics": meta.get("metrics", {}), "config": meta.get("config", {}),
                "calibration": meta.get("calibration"),  # the temperature the run fitted
                "tta": tta_of(model),  # the views averaged: config's, unless serve --tta
                "fashionnet_version": meta.get("fashionnet_version", __version__),
                "server_version": __version__,
                "max_images": max_images, "max_upload_mb": max_upload_mb}  # fmt: skip

    @app.get("/v1/model/card", response_class=PlainTextResponse, summary="MODEL_CARD.md")
    async def model_card() -> PlainTextResponse:
        if card is None:
            raise HTTPException(404, "this model has no MODEL_CARD.md (it is not in a run folder)")
        return PlainTextResponse(card, media_type="text/markdown")

    @app.get("/healthz", summary="the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and has made its warm-up prediction")
    async def readyz() -> JSONResponse:
        ready = state["ready"]
        return JSONResponse({"status": "ready" if ready else "warming up"}, 200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> Response:
        return metrics.response()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.replace("__FACTS__", json.dumps(
            {"classes": list(names), "size": list(shape), "model": model_id})))  # fmt: skip

    return app


async def _multipart(request: Request, max_images: int) -> tuple[list[str], list[bytes]]:
    """(names, bytes) of the `file` fields; any other field, or too many, is the client's
    mistake."""
    form = await request.form(max_files=max_images + 1, max_fields=max_images + 1)
    try:
        unknown = sorted({key for key in form if key != "file"})
        if unknown:
            raise HTTPException(422, f"unknown field {unknown[0]!r}: send images as `file`")
        files = form.getlist("file")
        if not files:
            raise HTTPException(422, "no `file` field: send one or more images as `file`")
        if len(files) > max_images:
            raise HTTPException(413, f"{len(files)} images; at most {max_images} a request")
        names, raws = [], []
        for i, f in enumerate(files):
            if isinstance(f, str):
                raise HTTPException(422, f"file #{i + 1} is text, not an uploaded image")
            names.append(f.filename or f"file{i + 1}")
            raws.append(await f.read())
        return names, raws
    finally:
        await form.close()


def _png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def app_from_env() -> FastAPI:
    """The application `fashionnet serve --workers N` starts in each worker process, from the
    settings the command put in FASHIONNET_SERVE (JSON)."""
    settings = json.loads(os.environ["FASHIONNET_SERVE"])
    return create_app(settings.pop("model"), **settings)
