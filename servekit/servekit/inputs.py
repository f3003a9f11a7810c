"""Reading and validating request bodies: predict inputs and training settings.

The gateway uses the same functions, so that a bad input is refused with the
same message wherever it is sent.
"""

from __future__ import annotations

import numpy as np
from flask import Request

from .backend import TrainConfig
from .errors import BadRequest, UnsupportedMediaType
from .images import image_to_input, pixels_to_input
from .settings import PROMOTION_POLICIES
from .tensor_body import TENSOR_MEDIA_TYPE, tensor_to_input

# name: (type, minimum, maximum)
TRAIN_FIELDS = {
    "epochs": (int, 1, 100),
    "batch_size": (int, 1, 4096),  # one batch of 54k images would need 15-25 GB
    "learning_rate": (float, 1e-7, 10.0),
    "seed": (int, 0, 2**31 - 1),
    "train_limit": (int, 1, 60_000),
}
TRAIN_REQUEST_FIELDS = {*TRAIN_FIELDS, "model", "promote", "run_id", "same_start"}
MAX_TRAIN_STEPS = 100_000  # per model and run: 5 epochs of 54k at batch 128 are 2,110
FULL_TRAIN_SET = 54_000


def json_body(request: Request, required: bool = False, any_content_type: bool = False,
              allowed: set[str] | frozenset[str] | None = None) -> dict:
    """The request's JSON object; {} when there is no body and none is required.

    ``any_content_type`` reads JSON whatever the Content-Type says (the Open Inference
    Protocol's clients do not always send one). ``allowed`` names the accepted fields:
    any other is a 400, so that a typo (``epoch``) is not silently ignored.
    """
    if not request.get_data(cache=True):
        if required:
            raise BadRequest("a JSON body is required")
        return {}
    if not (request.is_json or any_content_type):
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json")
    try:
        body = request.get_json(silent=True, force=any_content_type)
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    if body is None:
        raise BadRequest("the body is not valid JSON")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                             f"accepted: {', '.join(sorted(allowed))}")
    return body


def optional_int(body: dict, name: str, minimum: int, maximum: int) -> int | None:
    """An optional integer field within [minimum, maximum]."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer")
    if not minimum <= value <= maximum:
        raise BadRequest(f"'{name}' must be between {minimum} and {maximum}, got {value}")
    return value


MAX_SEEDS = 10


def optional_seeds(body: dict) -> list[int] | None:
    """A run's ``seeds``: 1 to 10 distinct seeds, every model trained once per seed; not with ``seed``."""
    seeds = body.get("seeds")
    if seeds is None:
        return None
    low, high = TRAIN_FIELDS["seed"][1:]
    if not (isinstance(seeds, list) and 1 <= len(seeds) <= MAX_SEEDS
            and all(isinstance(s, int) and not isinstance(s, bool) and low <= s <= high for s in seeds)):
        raise BadRequest(f"'seeds' must be a list of 1 to {MAX_SEEDS} integers between {low} and {high}")
    if len(set(seeds)) != len(seeds):
        raise BadRequest("'seeds' must not repeat a seed")
    if "seed" in body:
        raise BadRequest("give either 'seed' or 'seeds', not both")
    return seeds


def index_list(text: str, size: int, most: int) -> list[int]:
    """A comma-separated list of distinct indices into a collection of ``size``; 400 when malformed."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or len(parts) > most:
        raise BadRequest(f"give 1 to {most} comma-separated indices, e.g. ?indices=3,17")
    if not all(part.isdecimal() for part in parts):  # isdigit() passes "²", which int() refuses
        raise BadRequest("indices must be whole numbers")
    indices = [int(part) for part in parts]
    if max(indices) >= size:
        raise BadRequest(f"indices must be below {size}, got {max(indices)}")
    return list(dict.fromkeys(indices))


def query_int(args, name: str, minimum: int, maximum: int, default: int) -> int:
    """An integer query parameter within [minimum, maximum]; ``default`` when absent; 400 when malformed."""
    text = args.get(name)
    if text is None:
        return default
    # ASCII digits only: isdecimal() also passes other scripts' digits ('١'), which int() reads. The length is
    # checked before int(), which refuses strings of over 4,300 digits with a ValueError.
    digits = text.lstrip("0") or "0"
    wellformed = text.isascii() and text.isdecimal() and len(digits) <= len(str(maximum))
    if not (wellformed and minimum <= int(digits) <= maximum):
        raise BadRequest(f"'{name}' must be a whole number between {minimum} and {maximum}")
    return int(digits)


def query_bool(args, name: str) -> bool:
    """A true/false query parameter (false when absent); 400 for anything else."""
    text = args.get(name, "false")
    if text not in ("true", "false"):
        raise BadRequest(f"'{name}' must be true or false")
    return text == "true"


def optional_bool(body: dict, name: str) -> bool:
    """An optional boolean field (false when absent); 400 for anything but true or false."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false")
    return value


def optional_str(body: dict, name: str) -> str | None:
    """An optional string field."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string")
    return value


def promotion_policy(body: dict) -> str:
    """The body's ``promote`` field: always (the default), if_better or never."""
    policy = optional_str(body, "promote")
    policy = "always" if policy is None else policy
    if policy not in PROMOTION_POLICIES:
        raise BadRequest(f"'promote' must be one of {', '.join(PROMOTION_POLICIES)}, got {policy!r}")
    return policy


def train_config(body: dict) -> TrainConfig:
    """A TrainConfig from the body's fields; the defaults of docs/api.md for the absent ones."""
    values = {}
    for name, (kind, low, high) in TRAIN_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        wrong_type = isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float))
        if wrong_type:
            raise BadRequest(f"'{name}' must be {'an integer' if kind is int else 'a number'}")
        if not low <= value <= high:
            raise BadRequest(f"'{name}' must be between {low} and {high}, got {value}")
        values[name] = kind(value)
    config = TrainConfig(**values, same_start=optional_bool(body, "same_start"))
    steps = config.epochs * -(-min(config.train_limit or FULL_TRAIN_SET, FULL_TRAIN_SET) // config.batch_size)
    if steps > MAX_TRAIN_STEPS:
        raise BadRequest(f"{config.epochs} epochs at batch_size {config.batch_size} are {steps:,} steps per model; "
                         f"at most {MAX_TRAIN_STEPS:,} are accepted (raise batch_size or lower epochs)")
    return config


def predict_input(request: Request, max_images: int = 1) -> np.ndarray:
    """Images as float32 (N, 28, 28, 1): a multipart 'image' upload, a raw image body or JSON pixels (N = 1),
    or up to ``max_images`` raw float32 images (``TENSOR_MEDIA_TYPE``, the gateway's compact hop)."""
    if request.mimetype == TENSOR_MEDIA_TYPE:
        return tensor_to_input(request.get_data(), max_images)
    if request.files:
        upload = request.files.get("image")
        if upload is None:
            raise BadRequest(f"send the image in the multipart field 'image' (got {', '.join(request.files)})")
        return image_to_input(upload.read())[np.newaxis]
    if request.mimetype.startswith("image/"):
        return image_to_input(request.get_data())[np.newaxis]
    if request.is_json:
        body = json_body(request, required=True, allowed={"pixels"})
        if "pixels" not in body:
            raise BadRequest("the JSON body needs 'pixels': a 28x28 nested list of 0..1 floats")
        return pixels_to_input(body["pixels"])[np.newaxis]
    if request.mimetype.startswith("multipart/"):
        raise BadRequest("the multipart upload has no file; send the image in the field 'image'")
    raise UnsupportedMediaType(
        "send an image as multipart field 'image', or JSON {\"pixels\": 28x28 floats in 0..1}"
    )
