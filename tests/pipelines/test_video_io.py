"""Clip files: GIF and WebP round trips are exact, MP4 is close and browser-playable, writes are atomic, and the
reader refuses bad input with a ValueError that names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genmodels.pipelines.video_io import magnify, read_frames, write_gif, write_mp4, write_webp


def clip(frames: int = 6, height: int = 15, width: int = 17, colours: int = 200, seed: int = 0) -> np.ndarray:
    """Random frames drawn from ``colours`` colours (odd sides on purpose); frames 1, 2, 3 (those there) are
    identical, since encoders merge identical frames and the reader must give them back."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    out = palette[rng.integers(0, colours, (frames, height, width))]
    out[2:4] = out[1:2]
    return out


def moving_square(frames: int = 8, size: int = 32) -> np.ndarray:
    """A smooth clip (what video codecs are made for): a red square moving right on grey."""
    out = np.full((frames, size, size, 3), 90, np.uint8)
    for i in range(frames):
        out[i, 8:20, 2 + 2 * i:14 + 2 * i] = (220, 40, 30)
    return out


# ---------------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("write", [write_gif, write_webp], ids=["gif", "webp"])
def test_gif_and_webp_round_trip_exactly_identical_frames_included(write, tmp_path):
    frames = clip()
    path = write(frames, tmp_path / f"clip.{write.__name__[6:]}")
    back = read_frames(path)
    assert back.shape == frames.shape
    assert np.array_equal(back, frames)


def test_a_gif_of_identical_frames_keeps_every_frame(tmp_path):
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[..., 2] = 200
    write_gif(frames, tmp_path / "still.gif")
    with Image.open(tmp_path / "still.gif") as gif:
        assert gif.n_frames == 3  # written one by one, never merged
    assert np.array_equal(read_frames(tmp_path / "still.gif"), frames)


@pytest.mark.parametrize("write", [write_gif, write_webp], ids=["gif", "webp"])
def test_scale_magnifies_every_pixel_into_a_square(write, tmp_path):
    frames = clip(frames=3)
    back = read_frames(write(frames, tmp_path / f"clip.{write.__name__[6:]}", scale=3))
    assert back.shape == (3, 45, 51, 3)
    assert np.array_equal(back, np.repeat(np.repeat(frames, 3, 1), 3, 2))


def test_gif_loops_forever_at_the_rounded_frame_rate(tmp_path):
    write_gif(clip(frames=3), tmp_path / "clip.gif", fps=8)
    with Image.open(tmp_path / "clip.gif") as gif:
        assert gif.info["loop"] == 0 and gif.info["duration"] == 120  # 100 / 8 = 12.5 → 12 centiseconds (8.3 fps)


def test_gif_of_more_than_256_colours_is_quantised_close(tmp_path):
    frames = moving_square()
    frames = np.clip(frames.astype(int) + np.arange(32)[None, None, :, None] * 3, 0, 255).astype(np.uint8)
    frames[..., 1] = np.arange(32, dtype=np.uint8)[None, :, None] * 7  # > 256 colours a frame
    assert len(np.unique(frames[0].reshape(-1, 3), axis=0)) > 256
    back = read_frames(write_gif(frames, tmp_path / "clip.gif"))
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 6


def test_mp4_is_h264_yuv420p_and_decodes_close(tmp_path):
    import imageio.v3 as iio

    frames = moving_square()
    path = write_mp4(frames, tmp_path / "clip.mp4", fps=8, scale=8)
    meta = iio.immeta(path, plugin="FFMPEG")
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == 8
    assert meta["size"] == (256, 256)
    back = read_frames(path)
    assert back.shape == (8, 256, 256, 3)
    assert np.abs(back.astype(int) - magnify(frames, 8)).mean() < 2
    assert path.read_bytes()[4:8] == b"ftyp"


def test_mp4_of_odd_sides_is_padded_to_even(tmp_path):
    frames = clip(frames=2, height=15, width=17)
    back = read_frames(write_mp4(frames, tmp_path / "clip.mp4", scale=1))
    assert back.shape == (2, 16, 18, 3)
    assert read_frames(write_mp4(frames, tmp_path / "big.mp4", scale=2)).shape == (2, 30, 34, 3)


def test_folder_of_images_reads_in_file_name_order(tmp_path):
    frames = clip(frames=4)
    for i, name in enumerate(["b.png", "c.webp", "a10.png", "d.jpg"]):
        Image.fromarray(frames[i]).save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
    (tmp_path / "notes.txt").write_text("ignored")
    back = read_frames(tmp_path)
    assert back.shape == (4, 15, 17, 3)
    assert np.array_equal(back[0], frames[2]) and np.array_equal(back[1], frames[0])  # a10, b, c, d
    assert np.array_equal(back[2], frames[1])
    assert np.abs(back[3].astype(int) - frames[3]).mean() < 60  # jpeg: lossy, but that frame


def test_a_list_of_image_files_reads_in_the_given_order_and_a_single_image_is_one_frame(tmp_path):
    frames = clip(frames=3)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(frames[i]).save(paths[-1])
    assert np.array_equal(read_frames([paths[2], paths[0]]), frames[[2, 0]])
    assert np.array_equal(read_frames(paths[1]), frames[1:2])


def test_a_video_under_an_unknown_name_is_still_read(tmp_path):
    path = write_mp4(moving_square(), tmp_path / "clip.mp4", scale=2)
    path.rename(tmp_path / "upload.bin")
    assert read_frames(tmp_path / "upload.bin").shape == (8, 64, 64, 3)


# ---------------------------------------------------------------------------------------------------------
# Atomic writes


def _fail_midway(monkeypatch, fmt: str) -> None:
    """Make the ``fmt`` writer fail with "disk full" after it has written part of its file."""
    if fmt == "gif":
        from PIL import GifImagePlugin

        real, calls = GifImagePlugin.getdata, []

        def getdata(*args, **kwargs):  # the first frame is written, the second fails
            calls.append(1)
            if len(calls) > 1:
                raise OSError("disk full")
            return real(*args, **kwargs)

        monkeypatch.setattr(GifImagePlugin, "getdata", getdata)
        return

    def fail(*args, **kwargs):
        path = args[1] if fmt == "webp" else args[0]  # Image.save(self, fp, ...) / imwrite(uri, ...)
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("PIL.Image.Image.save" if fmt == "webp" else "imageio.v3.imwrite", fail)


@pytest.mark.parametrize("write", [write_mp4, write_gif, write_webp], ids=["mp4", "gif", "webp"])
def test_a_failed_write_leaves_no_partial_file_and_keeps_the_old_one(write, tmp_path, monkeypatch):
    target = tmp_path / "clip.out"
    target.write_bytes(b"old")
    _fail_midway(monkeypatch, write.__name__[6:])
    with pytest.raises(OSError, match="disk full"):
        write(clip(frames=2), target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.out"]


@pytest.mark.parametrize("write", [write_mp4, write_gif, write_webp], ids=["mp4", "gif", "webp"])
def test_writers_refuse_bad_arguments_before_writing(write, tmp_path):
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\] uint8"):
        write(np.zeros((2, 8, 8), np.uint8), tmp_path / "x")
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\] uint8"):
        write(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "x")
    with pytest.raises(ValueError, match="fps"):
        write(clip(frames=2), tmp_path / "x", fps=0)
    with pytest.raises(ValueError, match="scale"):
        write(clip(frames=2), tmp_path / "x", scale=0)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# Bad input to the reader


def test_missing_empty_and_corrupt_files_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_frames(tmp_path / "nothing.mp4")
    (tmp_path / "empty.gif").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.gif is empty"):
        read_frames(tmp_path / "empty.gif")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"cannot read clip .*junk\.mp4"):
        read_frames(tmp_path / "junk.mp4")
    (tmp_path / "junk.gif").write_bytes(b"GIF89a not really")
    with pytest.raises(ValueError, match=r"cannot read clip .*junk\.gif"):
        read_frames(tmp_path / "junk.gif")
    good = write_gif(clip(frames=3), tmp_path / "good.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut\.gif"):
        read_frames(tmp_path / "cut.gif")


def test_an_empty_folder_or_list_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no frames"):
        read_frames(tmp_path)
    with pytest.raises(ValueError, match="list of image files is empty"):
        read_frames([])


def test_frames_of_different_sizes_are_refused(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "0.png")
    Image.new("RGB", (16, 12)).save(tmp_path / "1.png")
    with pytest.raises(ValueError, match=r"differ in size \(16×12, 16×16"):
        read_frames(tmp_path)


def test_an_animation_inside_a_folder_is_refused(tmp_path):
    write_webp(clip(frames=3), tmp_path / "0.webp")
    with pytest.raises(ValueError, match="is an animation"):
        read_frames(tmp_path)


def test_too_many_frames_are_refused(tmp_path):
    frames = clip(frames=6)
    for write, name in ((write_gif, "c.gif"), (write_webp, "c.webp"), (write_mp4, "c.mp4")):
        path = write(frames, tmp_path / name)
        assert read_frames(path, max_frames=6).shape[0] == 6
        with pytest.raises(ValueError, match="more than 5 frames|at most 5"):
            read_frames(path, max_frames=5)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    with pytest.raises(ValueError, match="4 frames given; give at most 3"):
        read_frames(folder, max_frames=3)


def test_oversized_frames_are_refused_before_decoding(tmp_path, monkeypatch):
    frames = clip(frames=2, height=40, width=40)
    gif, mp4 = write_gif(frames, tmp_path / "c.gif"), write_mp4(frames, tmp_path / "c.mp4")
    Image.fromarray(frames[0]).save(tmp_path / "f.png")
    decoded = []
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: decoded.append(1))
    monkeypatch.setattr("imageio.v3.imiter", lambda *a, **k: decoded.append(1))
    for path in (gif, mp4, tmp_path / "f.png"):
        with pytest.raises(ValueError, match=r"too large \(40×40 pixels a frame; up to 1000"):
            read_frames(path, max_pixels=1000)
    assert decoded == []



@pytest.mark.parametrize("write", [write_mp4, write_gif, write_webp], ids=["mp4", "gif", "webp"])
def test_damaged_files_give_frames_or_a_value_error_never_another_exception(write, tmp_path):
    suffix = write.__name__[6:]
    good = write(moving_square(frames=4, size=16), tmp_path / f"good.{suffix}").read_bytes()
    rng = np.random.default_rng(0)
    damaged = [good[: int(len(good) * f)] for f in (0.05, 0.3, 0.6, 0.9)]
    for _ in range(4):
        data = bytearray(good)
        for i in rng.integers(0, len(data), 8):
            data[i] = int(rng.integers(0, 256))
        damaged.append(bytes(data))
    for i, data in enumerate(damaged):
        path = tmp_path / f"damaged{i}.{suffix}"
        path.write_bytes(data)
        try:
            frames = read_frames(path)
        except ValueError as err:
            assert path.name in str(err)
        else:
            assert frames.dtype == np.uint8 and frames.ndim == 4 and 1 <= len(frames) <= 64
