"""The picture pipeline: photos as people have them come out as the dataset's images.

Each finding of the first user trial is a test here: EXIF-rotated JPEGs, transparent PNGs, 16-bit
PNGs, a small garment on a big canvas, grey and gradient backdrops. The pictures are made from a
drawn pair of trousers by tests/photo_variants.py; on the real data, the same generator checks
agreement with the model on 200 test images of each kind.
"""

import io
import sys

import numpy as np
import pytest
from PIL import Image, features

from fashionnet.data import DataError, to_float
from fashionnet.data.photos import background, prepare
from photo_variants import KINDS, make


def trousers() -> np.ndarray:
    """Light trousers on black, 28x28, touching the top and bottom edges like dataset images."""
    im = np.zeros((28, 28), np.uint8)
    im[0:6, 8:20] = 200  # waistband
    im[6:28, 8:13] = 170  # legs
    im[6:28, 15:20] = 170
    return im


def backdrop(im: np.ndarray) -> np.ndarray:
    """Where the picture is background: black, and over a pixel away from the object (whose
    edges any resampling softens)."""
    near = im > 0
    for axis in (0, 1):
        near = near | np.roll(near, 1, axis) | np.roll(near, -1, axis)
    return ~near


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_picture_comes_out_as_the_dataset_image(kind, rng):
    original = trousers()
    seen = prepare(make(kind, original, rng), (28, 28))
    assert seen.dtype == np.uint8 and seen.shape == (28, 28)
    assert similarity(seen, original) > 0.9, kind
    assert seen[backdrop(original)].mean() < 8, "the backdrop must become black"
    assert seen.max() == 255  # contrast stretched as the training images are


def test_exif_orientation_is_applied(rng):
    raw = make("exif", trousers(), rng)
    with Image.open(io.BytesIO(raw)) as stored:
        assert stored.width > 0 and stored.getexif()[0x0112] == 6  # really stored sideways
    seen = prepare(raw, (28, 28))
    assert similarity(seen, trousers()) > similarity(seen, np.rot90(trousers())) + 0.3


def test_transparent_background_is_white_not_the_black_underneath(rng):
    raw = make("transparent", trousers(), rng)
    with Image.open(io.BytesIO(raw)) as im:
        assert im.mode == "RGBA" and np.asarray(im)[0, 0].tolist() == [0, 0, 0, 0]
    seen = prepare(raw, (28, 28))
    assert seen[backdrop(trousers())].mean() < 8 and seen[trousers() > 0].mean() > 120


def test_16_bit_png_is_scaled_not_clipped_to_white(rng):
    raw = make("16bit", trousers(), rng)
    with Image.open(io.BytesIO(raw)) as im:
        assert im.mode.startswith("I")
    seen = prepare(raw, (28, 28))
    assert seen[trousers() > 0].mean() > 120  # clipping made every pixel 255: nothing left


def test_small_garment_on_a_large_canvas_is_cropped_to_the_garment(rng):
    raw = make("canvas", trousers(), rng)
    with Image.open(io.BytesIO(raw)) as im:
        assert im.size == (1200, 1200)
    seen = prepare(raw, (28, 28))
    rows = np.flatnonzero(seen.max(axis=1) > 40)
    assert rows[0] <= 1 and rows[-1] >= 26  # the longest side fills the frame, as in training


@pytest.mark.parametrize("level", [255, 230, 170, 140])
def test_flat_backdrops_of_any_light_shade_become_zero(level):
    gray = np.full((300, 200), float(level))
    gray[40:260, 60:140] = 30.0  # a dark garment
    seen = prepare(gray.astype(np.uint8), (28, 28))
    assert seen.max() == 255 and np.count_nonzero(seen[:, :5]) == 0


def test_a_gradient_backdrop_is_fitted_as_a_plane(rng):
    ramp = np.linspace(240, 140, 400)[:, None] * np.ones((1, 300)) + rng.normal(0, 2, (400, 300))
    bg, noise = background(ramp)
    assert not isinstance(bg, float)
    assert np.abs(bg - np.linspace(240, 140, 400)[:, None]).max() < 3 and 1 < noise < 3


def test_a_dataset_image_passes_unchanged(rng):
    im = trousers()
    im[5, 3] = 7  # faint pixels, as the dataset has, must not be trimmed or stretched
    assert np.array_equal(prepare(im, (28, 28)), im)
    out = io.BytesIO()
    Image.fromarray(im).save(out, "PNG")
    assert np.array_equal(prepare(out.getvalue(), (28, 28)), im)


def test_a_blank_picture_is_all_black():
    assert not prepare(np.full((50, 50), 255, np.uint8), (28, 28)).any()


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.full((28, 28), 300.0), "0..1 or 0..255"),
        (np.full((28, 28), np.nan), "finite"),
        (np.zeros((2, 3, 28, 28)), "expected one picture"),
        (np.zeros((28, 28), np.int64), "int64 pixels"),
    ],
)
def test_arrays_that_are_not_pictures_are_refused_by_name(array, words):
    with pytest.raises(DataError, match=words):
        prepare(array, (28, 28), name="mine")


def test_floats_0_to_1_and_0_to_255_give_the_same_view():
    im = trousers()
    assert np.array_equal(prepare(im / 255.0, (28, 28)), prepare(im.astype(float), (28, 28)))


def test_a_huge_photo_is_reduced_before_the_pipeline(rng):
    big = np.full((3000, 4000, 3), 255, np.uint8)
    big[500:2500, 1500:2500] = 40
    out = io.BytesIO()
    Image.fromarray(big).save(out, "JPEG", quality=85)
    seen = prepare(out.getvalue(), (28, 28))
    assert seen.shape == (28, 28) and seen[:, 10:18].min() > 200 and seen[:, :4].max() == 0


@pytest.mark.realdata
def test_photo_variants_agree_with_the_model_on_200_images_each(real_data):
    from fashionnet.data import load_fashion_mnist
    from fashionnet.model import mlp
    from fashionnet.optim import Adam
    from fashionnet.train import fit

    rng = np.random.default_rng(0)
    data = load_fashion_mnist(real_data)
    x = to_float(data.train.images[:12000]).reshape(12000, -1)
    model = mlp(784, [128], 10, rng=rng)
    fit(model, Adam(model.parameters(), lr=2e-3), (x, data.train.labels[:12000]), epochs=3,
        rng=rng, batch_size=128)  # fmt: skip
    images = data.test.images[:200]
    want = model.predict(to_float(images).reshape(200, -1))
    for kind in KINDS:
        seen = np.stack([prepare(make(kind, im, rng), (28, 28)) for im in images])
        agree = np.mean(model.predict(to_float(seen).reshape(200, -1)) == want)
        print(f"{kind}: {agree:.3f}")
        assert agree >= 0.9, kind
    back = []
    for im in data.test.images[:1000]:
        out = io.BytesIO()
        Image.fromarray(im).save(out, "PNG")
        back.append(prepare(out.getvalue(), (28, 28)))
    assert np.array_equal(np.stack(back), data.test.images[:1000])


def _phone_photo(fmt: str) -> bytes:
    """The plain kind of picture saved as phones save photos: HEIC (through pillow-heif) or
    AVIF (Pillow's own, when built with it)."""
    with Image.open(io.BytesIO(make("plain", trousers(), np.random.default_rng(0)))) as im:
        out = io.BytesIO()
        if fmt == "heic":
            pillow_heif = pytest.importorskip("pillow_heif", reason="the heif extra is missing")
            pillow_heif.from_pillow(im.convert("RGB")).save(out, quality=90)
        else:
            if not features.check("avif"):
                pytest.skip("this Pillow was built without AVIF")
            im.convert("RGB").save(out, "AVIF", quality=90)
        return out.getvalue()


@pytest.mark.parametrize("fmt", ["heic", "avif"])
def test_phone_photo_formats_come_out_as_the_dataset_image(fmt):
    raw = _phone_photo(fmt)
    assert raw[4:12] == b"ftyp" + fmt.encode()  # really that format, not a PNG renamed
    seen = prepare(raw, (28, 28), name=f"photo.{fmt}")
    assert similarity(seen, trousers()) > 0.9
    assert seen[backdrop(trousers())].mean() < 8


def test_a_heic_photo_without_the_extra_says_what_to_install(monkeypatch):
    raw = _phone_photo("heic")
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as in a base install
    with pytest.raises(DataError) as refused:
        prepare(raw, (28, 28), name="IMG_0001.HEIC")
    assert str(refused.value) == (
        "IMG_0001.HEIC: a HEIC photo (as phones save them); reading it needs the heif extra: "
        "pip install 'fashionnet[heif]', or save it as JPEG"
    )


def test_a_truncated_heic_photo_is_one_clean_line():
    raw = _phone_photo("heic")
    with pytest.raises(DataError) as refused:
        prepare(raw[: len(raw) * 3 // 4], (28, 28), name="IMG_0002.HEIC")
    message = str(refused.value)  # pillow-heif's own words end with a newline: not kept
    assert message.startswith("IMG_0002.HEIC: not a readable image (") and message.endswith(")")
    assert "\n" not in message
