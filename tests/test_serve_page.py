"""The page at / in a real browser (Debian's chromium, headless, through Selenium) against a real
`fashionnet serve` process on 127.0.0.1: upload a test image through the file input, draw on the
canvas, read #result; no console errors. With FASHIONNET_SCREENSHOT=PATH the test also saves its
screenshot there, and with FASHIONNET_SCREENSHOT_MODEL=RUN_DIR it serves that model (the README's
picture: the default model, FASHIONNET_SCREENSHOT=docs/serve-page.png)."""

import json
import os

import numpy as np
import pytest

from browser import chromium, console_errors
from conftest import learnable, write_learnable
from serving import png, serve_process

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fashionnet.cli import main
from fashionnet.data import CLASS_NAMES


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A small model that has learned something (bands of rows give the class)."""
    folder = write_learnable(tmp_path_factory.mktemp("page"), 1500, 300)
    run = folder / "run"
    assert main(["train", "--data", str(folder), "--out", str(run), "--epochs", "3", "--val-size",
                 "300", "--hidden", "32", "--quiet", "--no-report"]) == 0  # fmt: skip
    return run


def wait_for_answer(driver, name):
    """#result once the status line reports the answer for `name` (an event in the page; the
    bound is against a hung browser only)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def answered(d):
        return d.find_element("id", "status").text.startswith(name + ": ")

    WebDriverWait(driver, 60).until(answered)
    return driver.find_element("id", "result").text


def test_the_page_classifies_an_upload_and_a_drawing(trained_run, tmp_path, capsys):
    from selenium.webdriver.common.action_chains import ActionChains

    rng = np.random.default_rng(3)
    image = learnable(rng, 1)[0][0]
    if os.environ.get("FASHIONNET_SCREENSHOT_MODEL"):  # a photo-like picture of a test image
        from fashionnet.data import load_fashion_mnist
        from photo_variants import make

        image = np.asarray(load_fashion_mnist().test.images[4])
        upload = tmp_path / "garment.png"
        upload.write_bytes(make("canvas", image, rng))
    else:
        upload = tmp_path / "garment.png"
        upload.write_bytes(png(image))
    assert main(["predict", str(trained_run), str(upload), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)["predictions"][0]["class"]

    served = os.environ.get("FASHIONNET_SCREENSHOT_MODEL") or trained_run
    if served != trained_run:
        assert main(["predict", str(served), str(upload), "--json"]) == 0
        expected = json.loads(capsys.readouterr().out)["predictions"][0]["class"]
    proc, port = serve_process(served)
    try:
        with chromium(1100, 1100) as driver:
            driver.get(f"http://127.0.0.1:{port}/")
            driver.find_element("id", "file").send_keys(str(upload))
            assert wait_for_answer(driver, "garment.png") == expected  # the CLI's class
            assert driver.find_element("id", "view").get_attribute("src").startswith("data:")
            bars = driver.find_elements("css selector", "#bars .bar")
            assert len(bars) == 5

            canvas = driver.find_element("id", "canvas")
            draw = ActionChains(driver)
            for x in (-50, 30):  # two legs and a waistband: a rough pair of trousers
                draw.move_to_element_with_offset(canvas, x, -100).click_and_hold()
                draw.move_by_offset(0, 100).move_by_offset(0, 100).release()
            draw.move_to_element_with_offset(canvas, -60, -110).click_and_hold()
            draw.move_by_offset(100, 0).release().perform()
            driver.find_element("id", "classify-drawing").click()
            assert wait_for_answer(driver, "drawing") in CLASS_NAMES
            assert not console_errors(driver)
            driver.execute_script("document.getElementById('file').value = ''")  # same file again
            driver.find_element("id", "file").send_keys(str(upload))
            wait_for_answer(driver, "garment.png")
            shot = os.environ.get("FASHIONNET_SCREENSHOT") or str(tmp_path / "page.png")
            driver.save_screenshot(shot)
            assert (
                driver.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)")
                >= 16
            )
            driver.set_window_size(500, 900)  # a phone: one column, nothing off the side
            width, inner = driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert width <= inner
    finally:
        proc.terminate()
        proc.wait()
        proc.stderr.close()
