import io

import numpy as np
import pytest
from PIL import Image

from brisc import imageio
from brisc.imageio import ImageLoadError, load

from conftest import write_dicom, write_png_bomb


def _check(x):
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0


def _gradient(w=300, h=200):
    return (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "LA", "1", "I", "F"])
def test_every_pil_mode_loads(tmp_path, mode):
    img = Image.fromarray(_gradient()).convert(mode)
    ext = {"CMYK": ".jpg", "F": ".tif", "I": ".tif"}.get(mode, ".png")
    p = tmp_path / f"x{ext}"
    img.save(p)
    _check(load(p))


def test_grayscale_is_replicated_to_three_equal_channels(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(_gradient()).save(p)
    x = load(p)
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[1], x[2])


def test_16bit_is_scaled_by_its_range_not_clamped(tmp_path):
    a = np.linspace(1000, 3000, 224 * 224).reshape(224, 224).astype(np.uint16)
    p = tmp_path / "d16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    x = load(p)
    # Full dynamic range used: darkest -> -1, brightest -> +1 (a clamp to 255 would make it all white).
    assert x.min() == pytest.approx(-1.0, abs=1e-6) and x.max() == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(x[0].ravel()) >= 0)  # order preserved


def test_transparent_pixels_composite_on_black(tmp_path):
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[..., :3] = 255  # white but fully transparent
    p = tmp_path / "t.png"
    Image.fromarray(rgba, "RGBA").save(p)
    assert np.allclose(load(p), -1.0)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((100, 300), np.uint8)
    a[:, :50] = 255  # bright band on the left
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "o.jpg"
    img.save(p, exif=exif, quality=95)
    ref = tmp_path / "ref.png"
    img.transpose(Image.Transpose.ROTATE_270).save(ref)
    assert np.abs(load(p) - load(ref)).max() < 0.15  # same geometry up to JPEG noise
    assert load(p)[0, :20].mean() > 0.5  # the band is now at the top


def test_large_jpeg_uses_draft_mode_and_matches_full_decode_closely(tmp_path):
    rng = np.random.default_rng(0)
    a = np.asarray(Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).resize((1024, 1024), Image.BILINEAR))
    p = tmp_path / "big.jpg"
    Image.fromarray(a).save(p, quality=95)
    drafted = imageio.decode(p, size=224)
    assert drafted.size == (256, 256)  # 1024 / 4: still >= 224 on both sides
    full = imageio.to_array(imageio.resize(imageio.decode(p, size=None)))
    assert np.abs(load(p) - full).mean() < 0.02


def test_decompression_bomb_is_refused(tmp_path):
    p = write_png_bomb(tmp_path / "bomb.png")  # refused before any pixel is decoded
    with pytest.raises(ImageLoadError, match="decompression bomb") as e:
        load(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("content,reason", [
    (b"", "not an image"),
    (b"hello, I am text\n", "not an image"),
])
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, content, reason):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as e:
        load(p)
    assert str(e.value).startswith(str(p))


def test_truncated_jpeg_raises(tmp_path):
    p = tmp_path / "trunc.jpg"
    buf = io.BytesIO()
    Image.fromarray(_gradient(600, 600)).save(buf, format="JPEG")
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load(p)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load(tmp_path / "nope.png")


def test_tiny_and_non_square_images_are_stretched_to_224(tmp_path):
    p = tmp_path / "one.png"
    Image.new("L", (1, 1), 200).save(p)
    x = load(p)
    _check(x)
    assert np.allclose(x, 200 / 255 * 2 - 1, atol=1e-6)
    p2 = tmp_path / "wide.png"
    Image.fromarray(_gradient(500, 100)).save(p2)
    _check(load(p2))


def test_dicom_modality_voi_and_monochrome1(tmp_path):
    a = np.tile(np.arange(64, dtype=np.uint16) * 10, (64, 1))
    m2 = write_dicom(tmp_path / "m2.dcm", a, slope=2.0, intercept=-100)
    m1 = write_dicom(tmp_path / "m1", a, photometric="MONOCHROME1")  # no extension: found by magic bytes
    assert imageio.is_dicom(m1)
    x2, x1 = load(m2), load(m1)
    _check(x2)
    assert x2[0, 0, 0] < x2[0, 0, -1]  # left dark, right bright
    assert np.abs(x1 + x2).max() <= 2 / 255 + 1e-6  # MONOCHROME1 is inverted (up to 8-bit rounding)


def test_dicom_window_is_applied(tmp_path):
    a = np.tile(np.arange(100, dtype=np.uint16) * 10, (8, 1))  # 0..990
    p = write_dicom(tmp_path / "w.dcm", a, window=(200, 100))  # shows 150..250 only
    x = load(p)
    row = x[0, 100]
    assert row[:20].max() == pytest.approx(-1, abs=1e-6) and row[-60:].min() == pytest.approx(1, abs=1e-6)


def test_dicom_multiframe_and_missing_pixels(tmp_path):
    ramp = np.tile(np.arange(32, dtype=np.uint16) * 20, (32, 1))
    frames = np.stack([ramp, ramp[:, ::-1]])  # second frame mirrored
    p = write_dicom(tmp_path / "mf.dcm", frames)
    assert imageio.dicom_frames(p) == 2
    assert np.allclose(load(p, frame=0), load(p, frame=1)[:, :, ::-1], atol=0.02)
    assert not np.allclose(load(p, frame=0), load(p, frame=1), atol=0.5)
    with pytest.raises(ImageLoadError, match="frame 2 out of range"):
        load(p, frame=2)
    empty = write_dicom(tmp_path / "nopix.dcm", frames[0], with_pixels=False)
    with pytest.raises(ImageLoadError, match="no pixel data"):
        load(empty)


def test_training_eval_transform_equals_the_loader_on_real_brisc(real_images):
    from brisc.train.dataset import eval_transform

    t = eval_transform()
    sizes = set()
    for p in real_images:
        img = imageio.decode_resized(p)
        sizes.add(Image.open(p).size)
        ours = load(p)
        theirs = t(img).numpy()
        assert np.abs(ours - theirs).max() <= 1e-6, p
    assert len(sizes) > 1  # the sample covers more than one source size
