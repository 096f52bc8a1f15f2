"""fashionnet serve: a model behind an HTTP API and a web page (the `serve` extra: FastAPI,
uvicorn, python-multipart, prometheus-client; imported only here).

    from fashionnet.serve import create_app
    app = create_app("runs/mlp")  # any ASGI server runs it; `fashionnet serve` uses uvicorn
"""

from .app import create_app

__all__ = ["create_app"]
