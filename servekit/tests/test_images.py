import io

import numpy as np
import pytest
from PIL import Image

from servekit.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from servekit.images import image_to_input, mnist_frame, pixels_to_input


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def digit(mnist) -> np.ndarray:
    """A real MNIST test digit (a 7), float 0..1, white ink on black."""
    return mnist.test.images[0].astype(np.float32) / 255.0


def big_black_on_white(digit: np.ndarray, size: int = 280) -> Image.Image:
    ink = Image.fromarray((digit * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    return Image.fromarray(255 - np.asarray(ink))


def test_mnist_digit_passes_through_nearly_unchanged(digit):
    out = image_to_input(encode(Image.fromarray((digit * 255).astype(np.uint8))))
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    assert similarity(out[..., 0], digit) > 0.9


def test_light_background_is_inverted_and_scaled(digit):
    out = image_to_input(encode(big_black_on_white(digit)))[..., 0]
    assert similarity(out, digit) > 0.8
    assert out[0].max() == 0.0 and out[:, 0].max() == 0.0  # the background became black


def test_rgba_with_transparent_background(digit):
    ink = (big_black_on_white(digit).point(lambda v: 255 - v))  # ink strength as alpha
    rgba = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    rgba.putalpha(ink)
    out = image_to_input(encode(rgba))[..., 0]
    assert similarity(out, digit) > 0.8


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "BMP", "WEBP"])
def test_other_formats(digit, fmt):
    image = big_black_on_white(digit).convert("RGB")
    out = image_to_input(encode(image, fmt))[..., 0]
    assert similarity(out, digit) > 0.75


def test_digit_is_centred_by_mass_with_longer_side_20():
    ink = np.zeros((100, 60), np.float32)
    ink[10:90, 5:25] = 1.0  # a tall bar in the top-left corner
    frame = mnist_frame(ink)
    rows, cols = np.nonzero(frame > 0.5)
    assert rows.max() - rows.min() + 1 == 20
    mass_row = (np.indices(frame.shape)[0] * frame).sum() / frame.sum()
    mass_col = (np.indices(frame.shape)[1] * frame).sum() / frame.sum()
    assert abs(mass_row - 14) <= 0.5 and abs(mass_col - 14) <= 0.5


def test_blank_image_gives_blank_input():
    out = image_to_input(encode(Image.new("L", (50, 50), 255)))
    assert out.shape == (28, 28, 1) and out.max() == 0.0


def test_not_an_image_is_415():
    with pytest.raises(UnsupportedMediaType, match="not an image"):
        image_to_input(b"%PDF-1.4 definitely not a picture")


def test_unsupported_format_is_415():
    with pytest.raises(UnsupportedMediaType):
        image_to_input(encode(Image.new("L", (30, 30)), "TIFF"))


def test_truncated_png_is_400(digit):
    data = encode(big_black_on_white(digit))
    with pytest.raises(BadRequest, match="truncated or corrupt"):
        image_to_input(data[: len(data) // 2])


def test_empty_upload_is_400():
    with pytest.raises(BadRequest, match="empty"):
        image_to_input(b"")


def test_huge_image_is_refused_before_decoding():
    bomb = encode(Image.new("1", (8000, 8000)))  # 64 Mpx, a few kB compressed
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="8000x8000"):
        image_to_input(bomb)


def test_pixels_validation(digit):
    assert pixels_to_input(digit.tolist()).shape == (28, 28, 1)
    with pytest.raises(BadRequest, match="28x28"):
        pixels_to_input([[0.0] * 27] * 28)
    with pytest.raises(BadRequest, match="between 0 and 1"):
        pixels_to_input([[2.0] * 28] * 28)
    with pytest.raises(BadRequest):
        pixels_to_input("not a grid")
    with pytest.raises(BadRequest):
        pixels_to_input([[0.0] * 28] * 27 + [[0.0] * 5])
