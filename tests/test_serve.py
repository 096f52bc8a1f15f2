"""fashionnet serve: every endpoint through FastAPI's TestClient, every bad input a 4xx, the
batcher, and the command as a process (a bad model, SIGTERM, several workers)."""

import asyncio
import json
import os
import signal
import socket

import numpy as np
import pytest

from serving import bomb, png, serve_process

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient

from fashionnet.checkpoint import save_checkpoint
from fashionnet.cli import main
from fashionnet.data import CLASS_NAMES
from fashionnet.model import mlp
from fashionnet.serve import create_app
from fashionnet.serve.app import MAX_CARD_BYTES
from fashionnet.serve.batcher import Batcher


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as train leaves it: model.npz and MODEL_CARD.md."""
    folder = tmp_path_factory.mktemp("run")
    model = mlp(784, [32], 10, rng=np.random.default_rng(0))
    meta = {"image_shape": [28, 28], "class_names": list(CLASS_NAMES), "input_scale": 1 / 255,
            "calibration": {"temperature": 0.6, "images": 5000}}  # fmt: skip
    save_checkpoint(folder / "model.npz", model, metadata=meta)
    (folder / "MODEL_CARD.md").write_text("# Model card: test\n")
    return folder


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app(run_dir, max_upload_mb=1)) as c:
        yield c


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    out = np.zeros((4, 28, 28), np.uint8)
    out[:, 2:-2, 6:-6] = rng.integers(30, 256, (4, 24, 16))
    return out


def test_predict_multipart_raw_and_pixels_agree_with_the_cli(client, run_dir, images, tmp_path,
                                                             capsys):  # fmt: skip
    for i, im in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(png(im))
    assert main(["predict", str(run_dir), *[str(tmp_path / f"{i}.png") for i in range(4)],
                 "--json", "--top-k", "3"]) == 0  # fmt: skip
    cli = [json.loads(line)["predictions"] for line in capsys.readouterr().out.splitlines()]
    files = [("file", (f"{i}.png", png(im), "image/png")) for i, im in enumerate(images)]
    r = client.post("/v1/predict?top_k=3", files=files)
    assert r.status_code == 200
    body = r.json()
    assert [p["input"] for p in body["predictions"]] == ["0.png", "1.png", "2.png", "3.png"]
    for ours, theirs in zip(body["predictions"], cli, strict=True):
        assert [t["class"] for t in ours["top"]] == [t["class"] for t in theirs]
        assert np.allclose([t["probability"] for t in ours["top"]],
                           [t["probability"] for t in theirs], rtol=1e-5)  # fmt: skip
    raw = client.post("/v1/predict", content=png(images[0]), headers={"content-type": "image/png"})
    assert raw.json()["predictions"][0]["top"][0]["class"] == cli[0][0]["class"]
    pixels = client.post("/v1/predict/pixels", json={"pixels": [images[1].ravel().tolist()]})
    assert pixels.json()["predictions"][0]["top"][0]["class"] == cli[1][0]["class"]
    assert body["model"].startswith(run_dir.name + "@")


def test_tta_serves_the_same_weights_through_other_views(run_dir, images):
    from fashionnet.checkpoint import load_model
    from fashionnet.data import to_float
    from fashionnet.model import FlipAveraged

    net = load_model(run_dir / "model.npz")
    for tta, model in (
        ("flip", FlipAveraged(net)),
        ("flip-shift", FlipAveraged(net, "flip-shift")),
    ):
        with TestClient(create_app(run_dir, tta=tta)) as c:
            assert c.get("/v1/model").json()["tta"] == tta
            pixels = [im.ravel().tolist() for im in images]
            r = c.post("/v1/predict/pixels?top_k=10", json={"pixels": pixels})
            for ours, probs in zip(r.json()["predictions"], model.predict_proba(to_float(images)),
                                   strict=True):  # fmt: skip
                by_class = {t["class"]: t["probability"] for t in ours["top"]}
                np.testing.assert_allclose([by_class[n] for n in CLASS_NAMES], probs, rtol=1e-5)
    with pytest.raises(ValueError, match="tta must be one of model, none, flip, flip-shift"):
        create_app(run_dir, tta="rotate")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_views_a_model_cannot_take_stop_serve_with_one_line(tmp_path, workers, capsys):
    """A 32x24 model has no mirror view: refused before the port is taken, not in a worker's
    warm-up with a traceback."""
    save_checkpoint(tmp_path / "wide.npz", mlp(32 * 24, [8], 10, rng=np.random.default_rng(0)),
                    metadata={"image_shape": [32, 24]})  # fmt: skip
    assert main(["serve", str(tmp_path / "wide.npz"), "--port", "0", "--workers", workers,
                 "--tta", "flip"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.endswith("needs square images; the model's are 32x24\n") and err.count("\n") == 1


def test_view_returns_what_the_model_saw(client, images):
    photo = np.full((200, 150), 255, np.uint8)
    photo[20:180, 40:110] = 40  # a dark garment on white
    r = client.post("/v1/predict?view=true&top_k=5", files={"file": ("p.png", png(photo))})
    prediction = r.json()["predictions"][0]
    assert len(prediction["top"]) == 5
    assert prediction["view"].startswith("data:image/png;base64,")


def test_model_card_health_metrics_page_docs(client):
    facts = client.get("/v1/model").json()
    assert facts["class_names"] == list(CLASS_NAMES)
    assert facts["input"]["image_shape"] == [28, 28] and facts["input"]["range"] == "0..255"
    assert facts["calibration"] == {"temperature": 0.6, "images": 5000}
    assert facts["tta"] is None  # the model's own: each image alone
    assert client.get("/v1/model/card").text.startswith("# Model card")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    page = client.get("/").text
    assert 'id="file"' in page and 'id="result"' in page and "<canvas" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    client.post("/v1/predict", content=b"junk", headers={"content-type": "image/png"})
    text = client.get("/metrics").text
    assert 'fashionnet_requests_total{endpoint="/v1/predict",status="415"}' in text
    assert "fashionnet_batch_size_bucket" in text and "fashionnet_request_seconds_bucket" in text


BAD = {
    "not an image": ({"content": b"hello", "headers": {"content-type": "image/png"}}, 415),
    "truncated": ({"content": "TRUNC", "headers": {"content-type": "image/png"}}, 422),
    "bomb": ({"content": "BOMB", "headers": {"content-type": "image/png"}}, 413),
    "empty body": ({"content": b"", "headers": {"content-type": "image/png"}}, 422),
    "too large": ({"content": b"\0" * (2 << 20), "headers": {"content-type": "image/png"}}, 413),
    "too large, chunked": ({"content": "CHUNKS", "headers": {"content-type": "image/png"}}, 413),
    "wrong type": ({"content": b"a,b", "headers": {"content-type": "text/csv"}}, 415),
    "no type": ({"content": b"\x89PNG"}, 415),
    "no file field": ({"files": {"picture": ("a.png", b"x")}}, 422),
    "text field": ({"data": {"file": "hello"}, "files": {"other": ("a", b"x")}}, 422),
    "too many images": ("MANY", 413),
    "broken multipart": ({"content": b"--x\r\nnonsense",
                          "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_uploads_are_4xx_with_a_message(client, images, case):
    kwargs, status = BAD[case]
    if kwargs == "MANY":
        kwargs = {"files": [("file", (f"{i}.png", png(images[0]))) for i in range(65)]}
    elif kwargs.get("content") == "TRUNC":
        kwargs = {**kwargs, "content": png(images[0])[:60]}
    elif kwargs.get("content") == "BOMB":
        kwargs = {**kwargs, "content": bomb()}
    elif kwargs.get("content") == "CHUNKS":  # no Content-Length: counted as it arrives
        kwargs = {**kwargs, "content": (b"\0" * (64 << 10) for _ in range(20))}
    r = client.post("/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail and (isinstance(detail, list) or len(detail) > 10)


@pytest.mark.parametrize(
    ("body", "query", "status"),
    [
        ({"pixels": [[0] * 783]}, "", 422),
        ({"pixels": [[300] * 784]}, "", 422),
        ({"pixels": [[-1] * 784]}, "", 422),
        ({"pixels": []}, "", 422),
        ({"pixels": [[0] * 784] * 65}, "", 413),
        ({"pixels": [[0] * 784], "labels": [1]}, "", 422),
        ({"pixels": "no"}, "", 422),
        ({"pixels": [[True] + [0] * 783]}, "", 422),  # not coerced to 1
        ({"pixels": [["5"] + [0] * 783]}, "", 422),  # not coerced to 5
        ({"pixels": [[0] * 784]}, "?top_k=0", 422),
        ({"pixels": [[0] * 784]}, "?top_k=11", 422),
        ({"pixels": [[0] * 784]}, "?top_k=x", 422),
    ],
)
def test_bad_pixels_are_4xx(client, body, query, status):
    r = client.post("/v1/predict/pixels" + query, json=body)
    assert r.status_code == status, r.text


def test_malformed_json_is_422(client):
    r = client.post("/v1/predict/pixels", content=b"{not json",
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422


def test_the_batcher_gathers_concurrent_requests_into_one_pass():
    seen = []

    def predict(x):
        seen.append(len(x))
        return np.stack([np.full(3, float(v)) for v in x[:, 0, 0]])

    async def scenario(max_batch):
        batcher = Batcher(predict, max_batch=max_batch, max_wait=60.0)  # fills up, never waits
        batcher.start()
        requests = [np.full((1 + i % 2, 2, 2), i, np.uint8) for i in range(8)]  # 12 images
        answers = await asyncio.gather(*[batcher(r) for r in requests])
        await batcher.stop()
        for r, a in zip(requests, answers, strict=True):
            assert a.shape == (len(r), 3) and (a == r[0, 0, 0]).all()  # each gets its own rows

    asyncio.run(scenario(12))
    assert seen == [12]
    seen.clear()
    asyncio.run(scenario(4))  # a request that would overflow a batch waits for the next one
    assert seen == [4, 3, 3, 2]
    seen.clear()
    asyncio.run(scenario(1))  # batching off: a pass per request
    assert seen == [1, 2, 1, 2, 1, 2, 1, 2]


@pytest.mark.parametrize("card", ["link to a secret", "fifo", "too large"])
def test_only_the_run_folders_own_card_is_served(card, run_dir, tmp_path):
    folder = tmp_path / "shared-run"
    folder.mkdir()
    (folder / "model.npz").symlink_to(run_dir / "model.npz")
    secret = tmp_path / "secret"
    secret.write_text("root:$6$hash\n")
    if card == "link to a secret":  # the server would hand the file to every client
        (folder / "MODEL_CARD.md").symlink_to(secret)
    elif card == "fifo":  # its read would wait forever
        os.mkfifo(folder / "MODEL_CARD.md")
    else:
        (folder / "MODEL_CARD.md").write_bytes(b"#" * (MAX_CARD_BYTES + 1))
    with TestClient(create_app(folder)) as c:
        r = c.get("/v1/model/card")
        assert r.status_code == 404 and "hash" not in r.text
        assert c.post("/v1/predict/pixels", json={"pixels": [[0] * 784]}).status_code == 200


def test_a_model_that_does_not_load_stops_serve_with_one_line(tmp_path, capsys):
    (tmp_path / "model.npz").write_bytes(b"PK\x03\x04 not really")
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.npz" in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_or_a_host_not_found_is_one_line(run_dir, workers, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", str(run_dir), "--port", port, "--workers", workers]) == 2
    err = capsys.readouterr().err
    assert err == f"fashionnet: error: --host 127.0.0.1 --port {port}: Address already in use\n"
    # TEST-NET-1 (RFC 5737): an address no machine of ours holds, refused without a DNS query
    assert main(["serve", str(run_dir), "--host", "192.0.2.1", "--workers", workers]) == 2
    err = capsys.readouterr().err
    assert (
        err == "fashionnet: error: --host 192.0.2.1 --port 8000: Cannot assign requested address\n"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_then_stops_on_sigterm_with_exit_0(run_dir, images, workers):
    import httpx

    proc, port = serve_process(run_dir, "--tta", "flip", workers=workers)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            r = http.post("/v1/predict", content=png(images[0]),
                          headers={"content-type": "image/png"})  # fmt: skip
            assert r.status_code == 200 and r.json()["predictions"][0]["top"][0]["class"]
            assert http.get("/v1/model").json()["tta"] == "flip"  # every worker's app has it
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        assert proc.wait() == 0 and "Traceback" not in err
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_request_sent_as_soon_as_the_address_is_announced_is_answered(run_dir, images, workers):
    """The announced address is the one listening (--port 0 included), and it listens before
    it is announced: with several workers, uvicorn's own workers listen only after their
    startup, and a client that connected at the announcement was refused."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "fashionnet", "serve", str(run_dir), "--port", "0",
           "--workers", str(workers)]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("fashionnet serve: ") and line.endswith(" (Ctrl-C stops)\n")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=120) as client:
            body = png(images[0])
            client.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
            assert client.recv(12) == b"HTTP/1.1 200"
    finally:
        proc.terminate()
        proc.wait()
        proc.stderr.close()


def test_a_slow_client_does_not_hold_the_server(run_dir, images):
    """A client that sends half its body and stalls: another request is answered meanwhile."""
    import socket

    import httpx

    proc, port = serve_process(run_dir)
    try:
        with socket.create_connection(("127.0.0.1", port)) as slow:
            body = png(images[0])
            slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:20])  # fmt: skip
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                r = http.post("/v1/predict", content=body, headers={"content-type": "image/png"})
                assert r.status_code == 200
            slow.sendall(body[20:])  # the slow one still gets its answer
            assert slow.recv(12).startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        proc.wait()
        proc.stderr.close()


def test_metrics_count_every_worker_whichever_answers(run_dir, images, tmp_path):
    """With --workers 2 each worker counted only its own requests, so /metrics showed whichever
    worker the connection reached. The workers now share Prometheus' multiprocess folder (in
    TMPDIR, removed when the server stops): the counts are the whole server's."""
    import sys

    import httpx

    from serving import start_server

    (tmp_path / "tmp").mkdir()
    cmd = [sys.executable, "-m", "fashionnet", "serve", str(run_dir), "--port", "0",
           "--workers", "2"]  # fmt: skip
    proc, port = start_server(cmd, 2, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    try:
        for _ in range(16):  # a connection each: the kernel hands them to either worker
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                assert http.get("/healthz").status_code == 200
                r = http.post("/v1/predict", content=png(images[0]),
                              headers={"content-type": "image/png"})  # fmt: skip
                assert r.status_code == 200
        for _ in range(4):  # any worker's answer
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                text = http.get("/metrics").text
            assert 'fashionnet_requests_total{endpoint="/healthz",status="200"} 16.0' in text
            assert 'fashionnet_requests_total{endpoint="/v1/predict",status="200"} 16.0' in text
        shared = [p.name[:19] for p in (tmp_path / "tmp").iterdir()]
        assert shared == ["fashionnet-metrics-"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait() == 0
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_metrics_folder_that_is_not_there_is_one_line(run_dir, workers, monkeypatch, capsys):
    """prometheus_client writes each count to PROMETHEUS_MULTIPROC_DIR when it is set: a folder
    that is not there failed every worker with a traceback at its first request."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics")
    assert main(["serve", str(run_dir), "--port", "0", "--workers", workers]) == 2
    err = capsys.readouterr().err
    assert err == ("fashionnet: error: PROMETHEUS_MULTIPROC_DIR=/nonexistent/metrics: no such "
                   "folder (where the metrics of the server's processes are kept)\n")  # fmt: skip
