"""fashionnet predict on pictures' http(s) addresses, served from 127.0.0.1 (never a real host):
the answer the local file gets, and one line for each address that gives no picture."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

import fashionnet
from fashionnet.checkpoint import save_checkpoint
from fashionnet.cli import main
from fashionnet.data import DataError
from fashionnet.data import download as download_module
from fashionnet.model import mlp
from serving import bomb


class Shop(BaseHTTPRequestHandler):
    """A shop's server: pictures, a product page, a missing page, redirects, a reply that
    declares more than the limit, one that streams more with no length, one cut short."""

    routes: ClassVar[dict] = {}
    asked: ClassVar[list] = []
    together = threading.Barrier(3)

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.asked.append((self.path, self.headers.get("User-Agent", "")))
        if self.path.startswith("/together/"):  # answered once three requests are in flight
            try:
                Shop.together.wait(timeout=60)  # a hang guard: the three come at once or never
            except threading.BrokenBarrierError:
                self.send_error(503)
                return
        route = self.routes.get(self.path.replace("/together/", "/img/"))
        if route is None:
            self.send_error(404)
            return
        kind, body = route
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", body)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if self.path == "/stream":  # no Content-Length: the body ends when the connection does
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(8):
                    self.wfile.write(body)
            except ConnectionError:  # the client stopped reading at its limit
                pass
            return
        declared = {"/cut": len(body) + 100, "/big": len(body) * 4}.get(self.path, len(body))
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body if self.path != "/big" else body * 4)


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    """urllib sends every address through HTTP_PROXY when one is set, 127.0.0.1 included."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def shop(tmp_path):
    rng = np.random.default_rng(0)
    picture = np.zeros((28, 28), np.uint8)
    picture[4:-4, 8:-8] = rng.integers(100, 256, (20, 12))
    Image.fromarray(picture).save(tmp_path / "trousers.png")
    png = (tmp_path / "trousers.png").read_bytes()
    Shop.asked = []
    Shop.routes = {
        "/img/trousers.png": ("image/png", png),
        "/img/no-suffix": ("application/octet-stream", png),
        "/img/blue%20jeans%20%C3%A9t%C3%A9.png": ("image/png", png),
        "/product/42": ("text/html", b"<!DOCTYPE html><html><body>trousers</body></html>"),
        "/data.json": ("application/json", b'{"a": 1}'),
        "/moved": ("redirect", "/img/trousers.png"),
        "/to-ftp": ("redirect", "ftp://127.0.0.1/trousers.png"),
        "/big": ("image/png", png),
        "/stream": ("image/png", png),
        "/cut": ("image/png", png),
        "/bomb.png": ("image/png", bomb()),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "trousers.png", len(png)
    server.shutdown()
    server.server_close()


@pytest.fixture
def model_file(tmp_path):
    model = mlp(784, [16], 10, rng=np.random.default_rng(1))
    save_checkpoint(tmp_path / "m.npz", model, metadata={"image_shape": [28, 28]})
    return tmp_path / "m.npz"


def test_an_address_gets_the_answer_its_file_gets(shop, model_file, tmp_path, capsys):
    base, local, _ = shop
    sheet = tmp_path / "seen.png"
    assert main(["predict", str(model_file), str(local), "--json", "--top-k", "3"]) == 0
    expected = json.loads(capsys.readouterr().out)["predictions"]
    for path in ("/img/trousers.png", "/img/no-suffix", "/moved", "/img/blue jeans été.png"):
        argv = ["predict", str(model_file), base + path, "--json", "--top-k", "3"]
        assert main([*argv, "--show", str(sheet)]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer == {"input": base + path, "predictions": expected}
        assert sheet.is_file()
        sheet.unlink()
    assert all(agent.startswith("fashionnet/") for _, agent in Shop.asked)
    assert fashionnet.classify(model_file, base + "/img/trousers.png", top_k=3) == [
        {"label": p["class"], "score": p["probability"]} for p in expected
    ]


@pytest.mark.parametrize(
    ("path", "words"),
    [("/product/42", "a web page, not a picture; give the picture's own address"),
     ("/data.json", "not a picture (the server sent application/json"),
     ("/nowhere.png", "HTTP 404"),
     ("/to-ftp", "redirected to ftp://127.0.0.1/trousers.png, not an http(s) address"),
     ("/big", "more than"),
     ("/stream", "more than"),
     ("/cut", "the connection ended early"),
     ("/bomb.png", "could be decompression bomb")],
)  # fmt: skip
def test_an_address_without_a_picture_is_one_line_and_the_rest_are_classified(
    shop, model_file, path, words, monkeypatch, capsys
):
    base, local, size = shop
    monkeypatch.setattr(download_module, "MAX_PICTURE_BYTES", 2 * size)  # /big: 4x, /stream: 8x
    assert main(["predict", str(model_file), base + path, str(local), "--json"]) == 2
    out, err = capsys.readouterr()
    assert [json.loads(line)["input"] for line in out.splitlines()] == [str(local)]
    assert err.count("\n") == 1 and err.startswith(f"fashionnet: error: {base + path}: ")
    assert words in err, err


def test_an_address_nobody_answers_is_one_line(model_file, capsys):
    import socket

    with socket.socket() as closed:  # a port that was just free: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/shirt.jpg"
    assert main(["predict", str(model_file), url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fashionnet: error: {url}: cannot fetch it (") and err.count("\n") == 1
    with pytest.raises(DataError, match="cannot fetch it"):
        fashionnet.classify(model_file, url)


def test_a_picture_still_arriving_at_the_deadline_is_one_line(shop, model_file, monkeypatch,
                                                               capsys):  # fmt: skip
    """A server may send a byte every few seconds for ever: the whole picture has a deadline,
    here one that has passed when the first bytes come."""
    base, _, _ = shop
    monkeypatch.setattr(download_module, "PICTURE_DEADLINE", -1.0)
    assert main(["predict", str(model_file), base + "/img/trousers.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "still arriving after -1 s" in err


@pytest.mark.parametrize(
    ("address", "words"),
    [("ftp://127.0.0.1/shirt.jpg", "only http:// and https:// addresses are fetched"),
     ("http://[::1/shirt.jpg", "cannot fetch it (Invalid IPv6 URL)")],
)  # fmt: skip
def test_an_address_that_cannot_be_fetched_is_one_line(address, words, model_file, capsys):
    assert main(["predict", str(model_file), address]) == 2
    err = capsys.readouterr().err
    assert err == f"fashionnet: error: {address}: {words}\n"


def test_addresses_are_fetched_several_at_a_time(shop, model_file, monkeypatch, capsys):
    """A fetch mostly waits on the network: with addresses among the inputs, more are in flight
    than there are cores (here 1). The server answers only once three requests are waiting."""
    base, _, _ = shop
    monkeypatch.setenv("FASHIONNET_THREADS", "1")
    Shop.together.reset()
    urls = [f"{base}/together/trousers.png" for _ in range(6)]
    assert main(["predict", str(model_file), *urls, "--json"]) == 0
    assert [json.loads(line)["input"] for line in capsys.readouterr().out.splitlines()] == urls
