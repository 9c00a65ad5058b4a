"""Clips on disk: MP4 / GIF / WebP writers and a reader for the frames a continuation starts from.

A clip is ``[F, H, W, 3]`` uint8. Every writer magnifies by a whole ``scale`` (nearest neighbour, each model
pixel a sharp square: a 32×32 clip at scale 8 is 256×256) and writes atomically (a reader never sees a partial
file; a failed write leaves nothing behind and an older file untouched).

* MP4: H.264 (libx264, yuv420p, ``+faststart``) through imageio's ffmpeg plugin, so browsers play it inline.
  Lossy; yuv420p stores colour at half resolution, so a scale of at least 2 keeps single-pixel colours.
* GIF: Pillow, looping forever. Exact when a frame has at most 256 colours (it gets its own palette), quantised
  otherwise. GIF delays are whole centiseconds, so the frame rate is rounded to one (8 fps plays at 8.3).
* WebP: Pillow, animated, lossless (always exact), looping forever.

Animation encoders (libwebp's always, Pillow's GIF writer, which :func:`write_gif` avoids) merge identical
consecutive frames into one frame shown longer. :func:`read_frames` undoes that: a frame shown k times the
shortest frame's duration counts k times, so a clip written here reads back with its frame count (a third-party
GIF reads as sampled at its fastest frame rate). A WebP whose frames are all identical holds one frame and reads
back as one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
from PIL import GifImagePlugin

from genmodels.io import atomic_path

DEFAULT_FPS = 8
MAX_FPS = 60.0
MAX_SCALE = 64
MAX_READ_FRAMES = 64
MAX_FRAME_PIXELS = 1024 * 1024  # per frame read; 64 such frames are 200 MB of uint8
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # frames in a folder (or a single-frame file)
PILLOW_ANIMATION_SUFFIXES = (".gif", ".webp")
FFMPEG_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
MP4_QUALITY = 8  # imageio's 0-10 scale; libx264 CRF 10 (visually lossless)

PathLike = str | Path


# ---------------------------------------------------------------------------------------------------------
# Helpers


def check_clip(frames: np.ndarray) -> np.ndarray:
    """``frames`` as a ``[F, H, W, 3]`` uint8 array with F ≥ 1; ValueError otherwise."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise ValueError(f"a clip must be a non-empty [F, H, W, 3] uint8 array, got {frames.dtype} "
                         f"{list(frames.shape)}")
    return frames


def _check_writer_args(fps: float, scale: int) -> None:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) \
            or not 0 < fps <= MAX_FPS:
        raise ValueError(f"fps must be a number in (0, {MAX_FPS:g}], got {fps!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be an integer in 1..{MAX_SCALE}, got {scale!r}")


def magnify(frames: np.ndarray, scale: int) -> np.ndarray:
    """``[..., H, W, C]`` → ``[..., H·scale, W·scale, C]`` by nearest neighbour (repeats)."""
    if scale == 1:
        return frames
    return np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Repeat the last row / column where a side is odd (yuv420p needs even sides)."""
    h, w = frames.shape[1:3]
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _paletted(frame: np.ndarray) -> PIL.Image.Image:
    """``[H, W, 3]`` uint8 → a "P" image, exact when the frame has at most 256 colours (quantised otherwise)."""
    colours, index = np.unique(frame.reshape(-1, 3), axis=0, return_inverse=True)
    if len(colours) > 256:
        return PIL.Image.fromarray(frame).quantize(256, dither=PIL.Image.Dither.NONE)
    image = PIL.Image.fromarray(index.reshape(frame.shape[:2]).astype(np.uint8), "P")
    image.putpalette(colours.astype(np.uint8).tobytes())
    return image


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------------------------
# Writers


def write_mp4(frames: np.ndarray, path: PathLike, fps: float = DEFAULT_FPS, scale: int = 1) -> Path:
    """Write ``frames`` ``[F, H, W, 3]`` uint8 as a browser-playable H.264 MP4 (magnified ``scale`` times, then
    padded by one edge row / column where a side is odd). Returns ``path``."""
    import imageio.v3 as iio

    frames = check_clip(frames)
    _check_writer_args(fps, scale)
    frames = _pad_even(magnify(frames, scale))
    with atomic_path(path) as tmp:
        # the temporary name ends in .tmp, so the container is named for imageio and for ffmpeg both
        iio.imwrite(tmp, frames, extension=".mp4", plugin="FFMPEG", fps=float(fps), codec="libx264",
                    pixelformat="yuv420p", quality=MP4_QUALITY, macro_block_size=2,
                    output_params=["-f", "mp4", "-movflags", "+faststart"])
    return Path(path)


def write_gif(frames: np.ndarray, path: PathLike, fps: float = DEFAULT_FPS, scale: int = 1) -> Path:
    """Write ``frames`` ``[F, H, W, 3]`` uint8 as a GIF that loops forever (exact for frames of at most 256
    colours). The delay is ``round(100 / fps)`` centiseconds, at least 2 (browsers slow shorter ones)."""
    frames = check_clip(frames)
    _check_writer_args(fps, scale)
    images = []
    for frame in frames:  # palette first, then magnify the indices (cheaper, same result)
        small = _paletted(frame)
        image = PIL.Image.fromarray(magnify(np.asarray(small)[..., None], scale)[..., 0], "P")
        image.putpalette(small.getpalette())
        images.append(image)
    delay_ms = max(2, round(100 / fps)) * 10
    # Frame by frame with Pillow's GIF primitives: its save_all would merge identical consecutive frames, and a
    # clip whose frames are all identical would then read back as one frame. Every frame is whole, with its own
    # colour table.
    header, _ = GifImagePlugin.getheader(images[0].copy(), info={"loop": 0, "duration": delay_ms})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(b"".join(header))
        for image in images:
            f.write(b"".join(GifImagePlugin.getdata(image, duration=delay_ms, include_color_table=True)))
        f.write(b";")  # trailer
    return Path(path)


def write_webp(frames: np.ndarray, path: PathLike, fps: float = DEFAULT_FPS, scale: int = 1) -> Path:
    """Write ``frames`` ``[F, H, W, 3]`` uint8 as a lossless animated WebP that loops forever."""
    frames = check_clip(frames)
    _check_writer_args(fps, scale)
    images = [PIL.Image.fromarray(f) for f in magnify(frames, scale)]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="WEBP", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                       loop=0, lossless=True, quality=50, method=4)
    return Path(path)


# ---------------------------------------------------------------------------------------------------------
# Reader


def _check_frame_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ValueError(f"{what} is too large ({width}×{height} pixels a frame; up to {max_pixels} are accepted)")


def _too_many(what: str, max_frames: int) -> ValueError:
    return ValueError(f"{what} holds more than {max_frames} frames; give at most {max_frames}")


def _pillow_frames(path: Path, max_frames: int, max_pixels: int, what: str) -> list[np.ndarray]:
    """Every frame of an image or animation (GIF, WebP, PNG, JPEG), a frame shown k times the shortest duration
    repeated k times."""
    with PIL.Image.open(path) as image:
        _check_frame_size(*image.size, max_pixels, what)  # the header's size: refused before decoding
        count = getattr(image, "n_frames", 1)
        if count > max_frames:
            raise _too_many(what, max_frames)
        frames, durations = [], []
        for i in range(count):
            image.seek(i)
            frames.append(np.asarray(image.convert("RGB"), dtype=np.uint8))  # decodes: a truncated file fails here
            durations.append(image.info.get("duration") or 0)
    if count > 1 and min(durations) > 0:
        repeats = [max(1, round(d / min(durations))) for d in durations]
        if sum(repeats) > max_frames:
            raise ValueError(f"{what} plays for {sum(repeats)} frames at its fastest frame rate (frames shown "
                             f"longer count several times); give at most {max_frames}")
        frames = [f for f, k in zip(frames, repeats, strict=True) for _ in range(k)]
    return frames


def _ffmpeg_frames(path: Path, max_frames: int, max_pixels: int, what: str) -> list[np.ndarray]:
    import imageio.v3 as iio

    extension = path.suffix.lower() if path.suffix.lower() in FFMPEG_SUFFIXES else ".mp4"  # ffmpeg probes anyway
    meta = iio.immeta(path, plugin="FFMPEG", extension=extension)
    _check_frame_size(*meta["size"], max_pixels, what)  # from the container's header, before decoding
    frames = []
    stream: Iterator[np.ndarray] = iio.imiter(path, plugin="FFMPEG", extension=extension)
    with contextlib.closing(stream):  # stops ffmpeg when we stop early
        for frame in stream:
            if len(frames) == max_frames:
                raise _too_many(what, max_frames)
            frames.append(np.asarray(frame, dtype=np.uint8)[..., :3])
    return frames


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.name)


def read_frames(path: PathLike | Sequence[PathLike], max_frames: int = MAX_READ_FRAMES,
                max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """Read a clip as ``[K, H, W, 3]`` uint8 from a folder of images (sorted by file name; png, jpg, webp), a list
    of image files (in the given order), a video (mp4, webm, mov, mkv, avi: ffmpeg), an animated GIF / WebP,
    or a single image (one frame).

    Raises ``ValueError`` naming the file for a missing, empty or corrupt file, an empty folder, frames of
    different sizes, more than ``max_frames`` frames, or frames over ``max_pixels`` (checked on the header's
    size, before decoding, where the format allows)."""
    if isinstance(path, (str, Path)):
        root = Path(path)
        if root.is_dir():
            files = _image_files(root)
            if not files:
                raise ValueError(f"folder {root} holds no frames (images named *{', *'.join(IMAGE_SUFFIXES)}, "
                                 "taken in file-name order)")
            sources = [(f, False) for f in files]
        elif root.is_file():
            sources = [(root, True)]  # a video, an animation or one image
        else:
            raise ValueError(f"{root} does not exist: give a video, a GIF / WebP, an image or a folder of images")
    else:
        if not path:
            raise ValueError("no frames given: the list of image files is empty")
        sources = [(Path(p), False) for p in path]
    if len(sources) > max_frames:
        raise ValueError(f"{len(sources)} frames given; give at most {max_frames}")

    frames: list[np.ndarray] = []
    for file, whole_clip in sources:
        what = f"{'clip' if whole_clip else 'frame'} {file}"
        if not file.is_file():
            raise ValueError(f"{what} does not exist")
        if file.stat().st_size == 0:
            raise ValueError(f"{what} is empty (0 bytes)")
        try:
            if file.suffix.lower() in FFMPEG_SUFFIXES:
                got = _ffmpeg_frames(file, max_frames, max_pixels, what)
            else:
                try:
                    got = _pillow_frames(file, max_frames, max_pixels, what)
                except PIL.UnidentifiedImageError:
                    if not whole_clip or file.suffix.lower() in (*IMAGE_SUFFIXES, *PILLOW_ANIMATION_SUFFIXES):
                        raise
                    got = _ffmpeg_frames(file, max_frames, max_pixels, what)  # a video under another name
        except ValueError:
            raise
        except Exception as err:  # decoders of untrusted files raise many types (OSError, SyntaxError, EOFError…)
            raise ValueError(f"cannot read {what}: {_first_line(err)}") from err
        if not got:
            raise ValueError(f"{what} holds no frames")
        if not whole_clip and len(got) > 1:
            raise ValueError(f"{what} is an animation; a folder or list of frames takes single images")
        frames.extend(got)
        if len(frames) > max_frames:
            raise ValueError(f"{len(frames)} frames given; give at most {max_frames}")
    sizes = sorted({f.shape[:2] for f in frames})
    if len(sizes) > 1:
        listed = ", ".join(f"{w}×{h}" for h, w in sizes)
        raise ValueError(f"the frames differ in size ({listed}, width×height); every frame must be the same size")
    return np.stack(frames)


__all__ = ["DEFAULT_FPS", "MAX_FRAME_PIXELS", "MAX_READ_FRAMES", "check_clip", "magnify", "read_frames", "write_gif",
           "write_mp4", "write_webp"]
