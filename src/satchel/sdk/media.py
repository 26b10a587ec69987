"""Media values for ``run.log``: ``satchel.Image`` (issue 6, docs/runs-files.md).

An image is encoded to PNG when it is created (so changing the array afterwards changes
nothing), and written to the run's spool when it is logged; the run's file uploader
(sdk/run_files.py) sends it to the bucket. The history row holds a small reference::

    {"_type": "image", "path": "media/images/<key>_<step>_<sha8>.png", "sha256": ...,
     "size": ..., "width": ..., "height": ..., "caption": ...}

Inputs: a file path (a PNG is kept byte for byte; other formats are converted with Pillow), a
PIL image (needs Pillow, which the caller already has), or an array (numpy or anything with
``__array__``: HxW, HxWx1, HxWx3, HxWx4; uint8/integers in 0-255, bools, or floats in
[0, 1]). Arrays are encoded by a small PNG writer here, so numpy images need no Pillow.
Pillow and numpy are imported only when needed (extra ``satchel[media]``).
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from satchel.errors import InvalidInput

if TYPE_CHECKING:
    from satchel.sdk.run import Run

__all__ = ["Image"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CAPTION = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PNG_COLOR = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (L, LA, RGB, RGBA)


class Image:
    """An image to log: ``run.log({"sample": satchel.Image(array, caption="epoch 3")})``."""

    def __init__(self, data: Any, caption: str | None = None) -> None:
        if caption is not None and (not isinstance(caption, str) or len(caption) > MAX_CAPTION):
            raise InvalidInput(f"caption must be a string of up to {MAX_CAPTION} characters")
        self.caption = caption
        if isinstance(data, str | Path):
            png, self.width, self.height = _from_path(Path(data))
        elif _is_pil(data):
            png, self.width, self.height = _from_pil(data)
        elif hasattr(data, "__array__") or hasattr(data, "__array_interface__"):
            png, self.width, self.height = _from_array(data)
        else:
            raise InvalidInput(f"satchel.Image takes a file path, a PIL image or a numpy array, "
                               f"not {type(data).__name__}")
        self.png = png
        self.sha256 = hashlib.sha256(png).hexdigest()

    def __repr__(self) -> str:
        return f"<satchel.Image {self.width}x{self.height} {self.sha256[:8]}>"

    def _satchel_encode(self, run: Run | None, key: str, step: int) -> dict[str, Any]:
        if run is None:
            raise InvalidInput("satchel.Image can be logged with run.log(...) only (not in "
                               "config or summary)")
        path = f"media/images/{safe_name(key)}_{step}_{self.sha256[:8]}.png"
        files = getattr(run, "_files", None)
        if files is not None:  # None: a disabled run writes nothing
            files.add_bytes(path, self.png, self.sha256, kind="media")
        return {"_type": "image", "path": path, "sha256": self.sha256, "size": len(self.png),
                "width": self.width, "height": self.height, "caption": self.caption}


def safe_name(key: str) -> str:
    """A history key as a relative file path: '/' keeps nesting, every segment is made of
    letters, digits, '.', '_' and '-' (never '.' or '..')."""
    parts = []
    for segment in key.split("/"):
        clean = _UNSAFE.sub("_", segment)[:100]
        parts.append("_" if clean in {"", ".", ".."} else clean)
    return "/".join(parts)


def _is_pil(data: Any) -> bool:
    return type(data).__module__.startswith("PIL.") and hasattr(data, "save")


def _from_path(path: Path) -> tuple[bytes, int, int]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read image {str(path)[:300]}: {exc.strerror or exc}") from exc
    if raw.startswith(PNG_SIGNATURE) and raw[12:16] == b"IHDR":
        width, height = struct.unpack(">II", raw[16:24])
        return raw, int(width), int(height)
    try:
        from PIL import Image as PILImage
    except ImportError as exc:
        raise InvalidInput(f"{path.name} is not a PNG; converting other formats needs Pillow: "
                           "pip install 'satchel[media]'") from exc
    try:
        with PILImage.open(path) as img:
            img.load()
            return _from_pil(img)
    except OSError as exc:
        raise InvalidInput(f"{str(path)[:300]} is not an image Pillow can read: {exc}") from exc


def _from_pil(img: Any) -> tuple[bytes, int, int]:
    import io

    if img.mode not in {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}:
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    width, height = img.size
    return buf.getvalue(), int(width), int(height)


def _from_array(data: Any) -> tuple[bytes, int, int]:
    try:
        import numpy as np
    except ImportError as exc:  # an object with __array__ but no numpy: unusual
        raise InvalidInput("logging arrays as images needs numpy: "
                           "pip install 'satchel[media]'") from exc
    arr = np.asarray(data)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        hint = ""
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
            hint = " (channels first? transpose to HxWxC, e.g. arr.transpose(1, 2, 0))"
        raise InvalidInput(f"image arrays must be HxW, HxWx3 or HxWx4, got shape "
                           f"{tuple(arr.shape)}{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInput(f"image array is empty (shape {tuple(arr.shape)})")
    if arr.dtype == np.bool_:
        pixels = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidInput("float image arrays must be finite (no NaN or infinity)")
        low, high = float(arr.min()), float(arr.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise InvalidInput(f"float pixel values must be in [0, 1], got [{low:g}, {high:g}]; "
                               "scale them or pass uint8")
        pixels = np.rint(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.dtype != np.uint8:
            low, high = int(arr.min()), int(arr.max())
            if low < 0 or high > 255:
                raise InvalidInput(f"integer pixel values must be in [0, 255], got "
                                   f"[{low}, {high}]")
        pixels = arr.astype(np.uint8)
    else:
        raise InvalidInput(f"image arrays must be uint8, integer, bool or float, not {arr.dtype}")
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    channels = 1 if pixels.ndim == 2 else int(pixels.shape[2])
    return encode_png(np.ascontiguousarray(pixels).tobytes(), width, height, channels), \
        width, height


def encode_png(pixels: bytes, width: int, height: int, channels: int) -> bytes:
    """8-bit PNG of row-major pixels (``channels`` 1-4), every row with filter 0: simple and
    deterministic (the same pixels always give the same bytes, hence the same file)."""
    stride = width * channels
    if len(pixels) != stride * height:
        raise ValueError("pixel buffer does not match width x height x channels")
    rows = b"".join(b"\x00" + pixels[y * stride:(y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR[channels], 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + \
        chunk(b"IEND", b"")
