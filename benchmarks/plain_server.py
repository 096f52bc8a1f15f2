"""The reference for `fashionnet serve`'s throughput: the plain FastAPI endpoint a user would
write first. No batching: each request decodes its PNG with PIL and runs the model's NumPy
forward pass on that one image. Run by benchmarks/serve_load.py as

    FASHIONNET_PLAIN_MODEL=MODEL uvicorn --app-dir benchmarks plain_server:app --workers 2 --fd N

where N is a socket the benchmark already listens on (uvicorn's own workers listen only once
their startup is logged, too late for a client that starts at that line).
"""

import io
import os

import numpy as np
from fastapi import FastAPI, Request
from PIL import Image

from fashionnet import CLASS_NAMES, load_model

model = load_model(os.environ["FASHIONNET_PLAIN_MODEL"])
app = FastAPI()


@app.post("/v1/predict")
async def predict(request: Request) -> dict:
    image = Image.open(io.BytesIO(await request.body())).convert("L")
    pixels = np.asarray(image, dtype=np.float32).reshape(1, -1) / 255
    probs = model.predict_proba(pixels)[0]
    best = int(probs.argmax())
    return {"class": CLASS_NAMES[best], "probability": float(probs[best])}
