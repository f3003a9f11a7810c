"""Turn an uploaded image (or a JSON pixel grid) into an MNIST-like 28x28 input.

MNIST digits are white ink on black, the ink scaled so that its longer side is
20 px and centred by centre of mass in a 28x28 frame. Uploads are brought to
the same form, so that the models see what they were trained on.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ApiError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from .slots import Slots

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MAX_PIXELS = 40_000_000  # beyond this an image is refused as a likely decompression bomb
WORK_PIXELS = 4_000_000  # larger images are reduced to about this before any float work
MAX_CONCURRENT_DECODES = 2  # of images over SMALL_IMAGE_PIXELS, per process
DECODE_QUEUE = 4  # large uploads waiting for a decode slot; beyond, 429: a burst must not hold every server thread
SMALL_IMAGE_PIXELS = 250_000  # a drawing or a cropped digit: decoded at once, without a slot (1 MB at most)
INK_THRESHOLD = 0.1
PAPER_PERCENTILE = 98  # of the border's brightness after inversion: the paper's level
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
MNIST_CENTRE = 14.0  # pixels above this (0..1, ink-bright) count as ink when cropping


_large_decodes = Slots(MAX_CONCURRENT_DECODES, "large image decodes are", retry_after_s=1, queue=DECODE_QUEUE,
                       max_wait_s=5.0)


def image_to_input(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded image and return float32 (28, 28, 1) in [0, 1], MNIST-style.

    A large image waits for one of a few decode slots (each may briefly hold a large bitmap); when they and
    their short queue are full it is refused, 429 with Retry-After, rather than holding a server thread.
    """
    if not data:
        raise BadRequest("the image is empty; send a PNG, JPEG, GIF, BMP or WebP file in the field 'image'")
    image = _open(data, max_pixels)  # the header alone: nothing is decoded yet
    with _decode_slot(image):
        image = _decode(image)
        gray = _to_gray_on_white(image)
    ink = _ink_on_black(gray)
    if not (ink > INK_THRESHOLD).any():
        raise ApiError("no digit found in the image: it is blank (or all one shade); draw or photograph a digit",
                       422)
    return mnist_frame(ink)[..., np.newaxis]


def pixels_to_input(pixels: object) -> np.ndarray:
    """Validate a 28x28 nested list of 0..1 numbers (already MNIST-like) -> float32 (28, 28, 1).

    Strict: strings, booleans and nulls are refused rather than converted ("0.5" and true are not pixels).
    """
    if not (isinstance(pixels, list) and len(pixels) == 28 and all(isinstance(r, list) and len(r) == 28
                                                                     for r in pixels)):
        shape = f"{len(pixels)} rows" if isinstance(pixels, list) else type(pixels).__name__
        raise BadRequest(f"'pixels' must be 28x28, a list of 28 lists of 28 numbers (got {shape})")
    for row in pixels:
        for value in row:
            if isinstance(value, list) and len(value) == 1:  # [28][28][1], as the model's input is shaped
                value = value[0]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise BadRequest(f"'pixels' values must be numbers between 0 and 1, got {value!r:.40}")
    array = np.array([[v[0] if isinstance(v, list) else v for v in row] for row in pixels], dtype=np.float32)
    return array[..., np.newaxis]


def mnist_frame(ink: np.ndarray) -> np.ndarray:
    """Crop ink (float 0..1, bright ink on 0), fit its longer side to 20 px, centre by mass in 28x28."""
    mask = ink > INK_THRESHOLD
    if not mask.any():
        return np.zeros((28, 28), np.float32)
    rows, cols = np.nonzero(mask)
    cropped = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = cropped.shape
    scale = 20.0 / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray((cropped * 255).astype(np.uint8)).resize(new_size, Image.Resampling.LANCZOS)
    digit = np.asarray(resized, np.float32) / 255.0
    frame = np.zeros((28, 28), np.float32)
    top, left = (28 - digit.shape[0]) // 2, (28 - digit.shape[1]) // 2
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return _centre_by_mass(frame)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The image with only its header read (format, size); 413 beyond ``max_pixels``, before any decoding."""
    with _pillow_errors():
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        if image.width * image.height > max_pixels:
            raise PayloadTooLarge(
                f"the image is {image.width}x{image.height} pixels; at most {max_pixels:,} pixels are accepted"
            )
    return image


def _decode_slot(image: Image.Image) -> AbstractContextManager[None]:
    """One of the large-decode slots for a large image (429 when they and their queue are full); none for a small."""
    return nullcontext() if image.width * image.height <= SMALL_IMAGE_PIXELS else _large_decodes.take()


def _decode(image: Image.Image) -> Image.Image:
    """The opened image's pixels, reduced to about WORK_PIXELS when larger, upright (EXIF orientation)."""
    with _pillow_errors():
        if image.format == "JPEG":  # decoded at a reduced scale: a phone photo never becomes 12 Mpx
            image.draft(image.mode, _budget_size(image.size))
        image.load()
        if image.width * image.height > WORK_PIXELS:  # before any float work, which multiplies memory
            image = _reducible(image).reduce(math.ceil(math.sqrt(image.width * image.height / WORK_PIXELS)))
        return ImageOps.exif_transpose(image)  # a phone photo is stored sideways with an orientation tag


@contextmanager
def _pillow_errors() -> Iterator[None]:
    """Pillow's failures as API errors: a decompression bomb 413, not an image 415, truncated or corrupt 400."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PayloadTooLarge(f"the image is too large to decode safely: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise UnsupportedMediaType(
                "the upload is not an image in a supported format; send PNG, JPEG, GIF, BMP or WebP"
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadRequest(f"the image could not be decoded (truncated or corrupt?): {exc}") from exc


def _reducible(image: Image.Image) -> Image.Image:
    """The image in a mode Pillow's ``reduce`` takes (not palette, 1-bit or 16-bit), nothing lost."""
    if image.mode in ("P", "PA"):
        return image.convert("RGBA")
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    return image


def _budget_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size within WORK_PIXELS with the same aspect ratio (JPEG's draft picks a scale at least this big)."""
    width, height = size
    factor = max(1.0, math.sqrt(width * height / WORK_PIXELS))
    return max(1, int(width / factor)), max(1, int(height / factor))


def _to_gray_on_white(image: Image.Image) -> np.ndarray:
    """Composite any transparency on white and convert to grayscale floats 0..1."""
    if image.mode in SIXTEEN_BIT_MODES:  # Pillow's "L" conversion would clip 16-bit values to white
        return np.clip(np.asarray(image, np.float32) / 65535.0, 0.0, 1.0)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), np.float32) / 255.0


def _ink_on_black(gray: np.ndarray) -> np.ndarray:
    """Invert light-background images so the ink is bright on black, as in MNIST, then take the paper away.

    A photo or scan has grey, shaded or noisy paper, not MNIST's pure black: its level, read from the
    border (a high percentile, so that shading and noise stay under it), is subtracted and the rest
    stretched to 0..1, so that the paper does not become a grey box that the crop keeps whole.
    """
    border = np.sort(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]))
    inverted = _median_of_sorted(border) > 0.5
    ink = 1.0 - gray if inverted else gray
    ink_border = 1.0 - border[::-1] if inverted else border  # the same pixels, still sorted
    paper = _percentile_of_sorted(ink_border, PAPER_PERCENTILE)
    if paper <= 0.0 or paper >= 0.95:
        return ink
    return np.clip((ink - paper) / (1.0 - paper), 0.0, 1.0)


# np.median and np.percentile cost more than the rest of a small upload's preprocessing together. These give
# their results for sorted float32 values, bit for bit (float32 arithmetic, as NumPy's), at a fraction of the cost:
# a median of exactly 0.5 must stay 0.5, or an image with paper at 127/255 and 128/255 would flip.


def _median_of_sorted(values: np.ndarray) -> float:
    """``np.median(values)`` of sorted float32 values."""
    count = len(values)
    return float((values[(count - 1) // 2] + values[count // 2]) / np.float32(2))


def _percentile_of_sorted(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of sorted float32 values."""
    position = q / 100.0 * (len(values) - 1)
    below = int(position)
    above = min(below + 1, len(values) - 1)
    fraction = position - below
    low, high = values[below], values[above]
    difference = high - low
    if fraction >= 0.5:  # NumPy's lerp: from the nearer end, so that fraction 1 gives ``high`` exactly
        return float(high - difference * np.float32(1.0 - fraction))
    return float(low + difference * np.float32(fraction))


def _centre_by_mass(frame: np.ndarray) -> np.ndarray:
    total = frame.sum()
    if total <= 0:
        return frame
    # MNIST's own digits have their centre of mass at pixel (14, 14), measured on its test set.
    shift_row = int(round(MNIST_CENTRE - float(frame.sum(axis=1, dtype=np.float64) @ _POSITIONS) / float(total)))
    shift_col = int(round(MNIST_CENTRE - float(frame.sum(axis=0, dtype=np.float64) @ _POSITIONS) / float(total)))
    return _shift(frame, shift_row, shift_col)


_POSITIONS = np.arange(28, dtype=np.float64)


def _shift(frame: np.ndarray, down: int, right: int) -> np.ndarray:
    """Shift without wrap-around: what leaves the frame is dropped, new cells are zero."""
    shifted = np.zeros_like(frame)
    height, width = frame.shape
    src_rows = slice(max(0, -down), min(height, height - down))
    dst_rows = slice(max(0, down), min(height, height + down))
    src_cols = slice(max(0, -right), min(width, width - right))
    dst_cols = slice(max(0, right), min(width, width + right))
    shifted[dst_rows, dst_cols] = frame[src_rows, src_cols]
    return shifted


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image array encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(image: np.ndarray) -> str:
    """A uint8 grayscale image as base64 PNG text (for JSON answers and data: URLs)."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def grid_png_base64(images: np.ndarray, columns: int = 16) -> str:
    """Float (N, 28, 28) images in 0..1 tiled into rows of ``columns``, as base64 PNG text."""
    count = len(images)
    rows = -(-count // columns)
    canvas = np.zeros((rows * 28, columns * 28), np.uint8)
    for i, image in enumerate(np.clip(images, 0, 1)):
        row, column = divmod(i, columns)
        canvas[row * 28:(row + 1) * 28, column * 28:(column + 1) * 28] = np.round(image * 255).astype(np.uint8)
    return png_base64(canvas)
