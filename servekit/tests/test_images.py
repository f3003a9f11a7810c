import io

import numpy as np
import pytest
from PIL import Image

from servekit.errors import ApiError, BadRequest, PayloadTooLarge, UnsupportedMediaType
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


@pytest.mark.parametrize("blank", [
    Image.new("L", (50, 50), 255),                  # white paper
    Image.new("L", (50, 50), 128),                  # one grey shade
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)),      # fully transparent
])
def test_a_blank_image_is_422_not_a_confident_label(blank):
    with pytest.raises(ApiError) as refused:
        image_to_input(encode(blank))
    assert refused.value.status == 422 and "no digit" in refused.value.message


def black_on_white(digit: np.ndarray, size: int = 84) -> Image.Image:
    """The MNIST digit as a person would draw it: black ink on white, larger."""
    return Image.fromarray(((1.0 - digit) * 255).astype(np.uint8)).resize((size, size), Image.Resampling.LANCZOS)


# How Pillow's exif_transpose turns a stored image upright, per EXIF orientation; the stored image is
# the upright one turned by the inverse.
STORED_AS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_orientation_is_applied_first(digit, orientation):
    upright = black_on_white(digit)
    stored = upright.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    assert similarity(image_to_input(buffer.getvalue()), image_to_input(encode(upright))) > 0.99


def test_a_16_bit_png_is_scaled_not_clipped(digit):
    eight_bit = black_on_white(digit)
    sixteen = Image.fromarray((np.asarray(eight_bit, np.uint16) * 257).astype(np.uint16))  # mode I;16
    out = image_to_input(encode(sixteen))
    assert out.max() > 0.9 and similarity(out, image_to_input(encode(eight_bit))) > 0.99


def test_a_digit_on_shaded_noisy_paper_comes_out_like_a_clean_scan(digit):
    clean = black_on_white(digit, 112)
    paper = np.linspace(0.55, 0.9, 112, dtype=np.float32)[np.newaxis, :].repeat(112, axis=0)  # shaded
    paper += np.random.default_rng(7).normal(0, 0.02, paper.shape).astype(np.float32)        # noisy
    ink = 1.0 - np.asarray(clean, np.float32) / 255.0
    photo = np.clip(paper * (1.0 - ink) + 0.08 * ink, 0, 1)  # dark ink printed on that paper
    out = image_to_input(encode(Image.fromarray((photo * 255).astype(np.uint8))))
    reference = image_to_input(encode(clean))
    assert similarity(out, reference) > 0.9
    assert (out[..., 0] > 0.1).sum() < 2 * (reference[..., 0] > 0.1).sum()  # no grey box around the digit


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


def test_a_huge_flat_png_is_reduced_before_any_float_work(digit):
    """A 51 KiB PNG of 6320x6320 pixels: the arrays stay small (tracemalloc sees numpy's memory)."""
    import tracemalloc

    big = Image.new("L", (6320, 6320), 255)
    big.paste(black_on_white(digit, 3000), (1600, 1600))
    data = encode(big)
    tracemalloc.start()
    try:
        out = image_to_input(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"  # 40 Mpx of float32 alone would be 160 MiB
    assert similarity(out, image_to_input(encode(black_on_white(digit)))) > 0.95


def test_a_large_jpeg_photo_is_decoded_at_a_reduced_scale(digit):
    photo = black_on_white(digit, 3000).convert("RGB")
    out = image_to_input(encode(photo, "JPEG"))
    assert similarity(out, image_to_input(encode(black_on_white(digit)))) > 0.95


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "RGBA"])
def test_large_images_of_every_mode_are_reduced_not_refused(digit, mode):
    large = black_on_white(digit, 2100)
    if mode == "I;16":
        large = Image.fromarray((np.asarray(large, np.uint16) * 257).astype(np.uint16))
    else:
        large = large.convert(mode)
    out = image_to_input(encode(large, "GIF" if mode == "P" else "PNG"))  # was a 400 for P, 1 and I;16
    assert similarity(out, image_to_input(encode(black_on_white(digit)))) > 0.8  # 1-bit is dithered
