"""The aligned head (`fbjax.geometry.align`) on analytic ellipses and on real HC18 heads."""

from __future__ import annotations

import math
import os
import pathlib

import cv2
import numpy as np
import pytest

from fbjax.geometry import align, ellipse_fit
from fbjax.geometry.ellipse_fit import Ellipse

SIZE = (96, 128)
FRACTION = 0.8
MARGIN = 0.08
# (cx, cy, a, b, theta_deg): several angles, sizes, aspect ratios; the last two
# reach past the image border.
CASES = [
    (200.0, 150.0, 120.0, 95.0, 0.0),
    (210.3, 160.7, 90.0, 70.0, 30.0),
    (190.0, 140.0, 150.0, 110.0, 75.0),
    (205.5, 145.2, 60.0, 55.0, 120.0),
    (200.0, 150.0, 130.0, 80.0, 160.0),
    (100.0, 120.0, 140.0, 100.0, 45.0),
    (300.0, 60.0, 110.0, 90.0, 100.0),
]


def _ellipse(cx, cy, a, b, deg) -> Ellipse:
  return Ellipse.make(cx, cy, a, b, math.radians(deg))


def _scene(e: Ellipse, shape=(300, 400)) -> np.ndarray:
  """Bright background (must be masked), the head, and a mark off-centre on the major axis."""
  img = np.full(shape, 200, np.uint8)
  img[ellipse_fit.rasterize(e, shape) > 0] = 80
  mark = Ellipse(e.cx + 0.5 * e.a * math.cos(e.theta), e.cy + 0.5 * e.a * math.sin(e.theta),
                 0.12 * e.b, 0.12 * e.b, 0.0)
  img[ellipse_fit.rasterize(mark, shape) > 0] = 255
  return img


@pytest.mark.parametrize("case", CASES)
def test_aligned_ellipse_is_horizontal_centred_and_of_fixed_size(case):
  e = _ellipse(*case)
  shape = (300, 400)
  head = ellipse_fit.rasterize(e, shape) * 255
  crop, info = align.aligned_head(head, e, size=SIZE, head_fraction=FRACTION, margin=MARGIN)
  assert crop.shape == SIZE and crop.dtype == np.uint8
  fit = ellipse_fit.ellipse_from_mask(crop.astype(np.float32) / 255.0)
  centre = ((SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2)
  angle = min(fit.theta, math.pi - fit.theta)
  inside = info["valid"].all()
  if inside:  # a head cut by the border is checked through its matrices only
    assert math.degrees(angle) < 1.0, (case, fit)
    assert abs(fit.cx - centre[0]) < 0.3 and abs(fit.cy - centre[1]) < 0.3, (case, fit)
    assert 2 * fit.a == pytest.approx(FRACTION * SIZE[1], rel=0.01)
    assert fit.b / fit.a == pytest.approx(e.b / e.a, abs=0.01)
  al = info["alignment"]
  assert al.ellipse.a * 2 == pytest.approx(FRACTION * SIZE[1])
  # The image ellipse's points land on the axis-aligned crop ellipse.
  t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
  on_crop = al.to_crop(e.points(50))
  expect = np.stack([centre[0] + al.ellipse.a * np.cos(t), centre[1] + al.ellipse.b * np.sin(t)],
                    -1)
  np.testing.assert_allclose(on_crop, expect, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_outside_the_head_is_masked(case):
  e = _ellipse(*case)
  crop, info = align.aligned_head(_scene(e), e, size=SIZE, margin=MARGIN)
  al = info["alignment"]
  yy, xx = np.mgrid[0:SIZE[0], 0:SIZE[1]]
  ce = al.ellipse
  r = np.sqrt(((xx - ce.cx) / ce.a) ** 2 + ((yy - ce.cy) / ce.b) ** 2)
  assert (crop[r > 1 + MARGIN + 0.02] == 0).all()
  # Inside the margin the bright background (200) is kept: the skull's edge survives.
  ring = (r > 1.03) & (r < 1 + MARGIN - 0.02) & info["valid"]
  assert ring.any() and np.median(crop[ring]) > 150
  # The head itself is kept.
  inner = (r < 0.3) & info["valid"]
  assert inner.any() and np.median(crop[inner]) < 120


@pytest.mark.parametrize("case", CASES[:5])
def test_inverse_maps_crop_points_back_to_image_points(case):
  e = _ellipse(*case)
  shape = (300, 400)
  al = align.alignment(e, shape, size=SIZE)
  rng = np.random.default_rng(0)
  pts = rng.uniform([0, 0], [SIZE[1] - 1, SIZE[0] - 1], size=(20, 2))
  np.testing.assert_allclose(al.to_crop(al.to_image(pts)), pts, atol=1e-9)
  # Through the pixels: a bright dot placed in the image is found where the
  # inverse map says (its centroid on the crop, mapped back).
  for p_crop in [(40.0, 30.0), (90.0, 60.0), (64.0, 47.5)]:
    px, py = al.to_image([p_crop])[0]
    img = np.zeros(shape, np.float32)
    dot = Ellipse(px, py, 6.0, 6.0, 0.0)
    img[ellipse_fit.rasterize(dot, shape) > 0] = 1.0
    crop, _ = align.aligned_head(img, e, size=SIZE, margin=10.0)
    ys, xs = np.nonzero(crop > 0)
    w = crop[ys, xs]
    centroid = np.array([[np.sum(xs * w) / w.sum(), np.sum(ys * w) / w.sum()]])
    back = al.to_image(centroid)[0]
    # The dot's own centroid on the image (pixel centres inside the rasterized disc).
    iy, ix = np.nonzero(img)
    assert np.hypot(back[0] - ix.mean(), back[1] - iy.mean()) < 0.5, (case, p_crop, back)


def test_heatmap_on_the_crop_maps_onto_the_image():
  e = _ellipse(200.0, 150.0, 120.0, 90.0, 35.0)
  crop, info = align.aligned_head(_scene(e), e, size=SIZE)
  heat = np.zeros(SIZE, np.float32)
  heat[40:56, 90:106] = 1.0  # a hot patch on the crop
  on_image = align.crop_to_image(heat, info["alignment"])
  ys, xs = np.nonzero(on_image > 0.5)
  centre_img = info["alignment"].to_image([[97.5, 47.5]])[0]
  assert abs(xs.mean() - centre_img[0]) < 0.5 and abs(ys.mean() - centre_img[1]) < 0.5


@pytest.mark.parametrize("case", CASES)
def test_rotating_the_image_180_degrees_gives_the_flipped_crop(case):
  e = _ellipse(*case)
  img = _scene(e)
  h, w = img.shape
  rotated = img[::-1, ::-1]
  e_rot = Ellipse.make(w - 1 - e.cx, h - 1 - e.cy, e.a, e.b, e.theta)
  crop, _ = align.aligned_head(img, e, size=SIZE)
  flipped, _ = align.aligned_head(img, e, size=SIZE, flip=True)
  crop_rot, _ = align.aligned_head(rotated, e_rot, size=SIZE)
  # The same image, the other canonical orientation (OpenCV's fixed-point bilinear
  # weights may round one grey level differently).
  assert np.abs(flipped.astype(int) - crop[::-1, ::-1]).max() <= 1
  diff = np.abs(crop_rot.astype(int) - flipped.astype(int))
  assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2, (diff.mean(), diff.max())
  # The off-centre mark sits on the +x side of the crop without flip, -x with it.
  cols = np.nonzero(crop == 255)[1]
  cols_f = np.nonzero(flipped == 255)[1]
  assert cols.mean() > SIZE[1] / 2 > cols_f.mean()


@pytest.mark.parametrize("aspect", [640 / 392, 959 / 661])
def test_pixel_aspect_undoes_a_stretched_image(aspect):
  # A scene with a true-proportion head, then squeezed to a square as the 640x640
  # copies were: the ellipse in the stored pixels is the true one squeezed in x.
  e = _ellipse(290.0, 200.0, 150.0, 115.0, 30.0)
  true_img = _scene(e, (400, round(400 * aspect)))
  stored = cv2.resize(true_img, (400, 400), interpolation=cv2.INTER_AREA)
  sx = 400 / true_img.shape[1]
  aspect = 1 / sx  # the exact stretch of this (rounded) width
  e_stored = align._stretched(e, sx)
  # cv2.resize maps pixel centres x -> (x + 0.5) * sx - 0.5
  e_stored = Ellipse.make(e_stored.cx + 0.5 * sx - 0.5, e_stored.cy, e_stored.a, e_stored.b,
                          e_stored.theta)
  ref, _ = align.aligned_head(true_img, e, size=SIZE)
  undone, info = align.aligned_head(stored, e_stored, size=SIZE, pixel_aspect=aspect)
  kept, _ = align.aligned_head(stored, e_stored, size=SIZE)
  assert info["alignment"].ellipse.b / info["alignment"].ellipse.a == pytest.approx(e.b / e.a)
  d_undone = np.abs(undone.astype(int) - ref).mean()
  d_kept = np.abs(kept.astype(int) - ref).mean()
  print(f"\nstretch {aspect:.3f}: mean |crop - true-proportion crop| {d_undone:.2f} undone, "
        f"{d_kept:.2f} kept")
  assert d_undone < 0.5 and d_kept > 10 * d_undone, (d_undone, d_kept)
  # The maps still round-trip through the stretch.
  al = info["alignment"]
  np.testing.assert_allclose(al.to_crop(al.to_image([[10.0, 20.0]])), [[10.0, 20.0]])
  # NaN (unknown) means no correction.
  nan, _ = align.aligned_head(stored, e_stored, size=SIZE, pixel_aspect=float("nan"))
  np.testing.assert_array_equal(nan, kept)


@pytest.mark.parametrize("case", [c for c in CASES if c[2] <= 100] + [
    (200.0, 150.0, 95.0, 70.0, 140.0)])
@pytest.mark.parametrize("flip, aspect", [(False, 1.0), (True, 1.0), (False, 1.45)])
def test_jnp_twin_matches_the_opencv_crop(case, flip, aspect):
  import jax
  cx, cy, a, b, deg = case
  shrink = 1.0 if aspect == 1.0 else 0.6  # stays within a 2x downscale once unstretched
  e = _ellipse(cx, cy, shrink * a, shrink * b, deg)
  img = cv2.GaussianBlur(_scene(e), (0, 0), 3.0)  # float32 below: OpenCV's bilinear is exact
  ref, info = align.aligned_head(img.astype(np.float32), e, size=SIZE, flip=flip,
                                 pixel_aspect=aspect)
  assert info["alignment"].scale * min(1.0, aspect) >= 0.5  # no low-pass in the reference
  fn = jax.jit(lambda im, el, f, pa: align.aligned_head_jnp(im, el, size=SIZE, flip=f,
                                                            pixel_aspect=pa))
  got = np.asarray(fn(img.astype(np.float32), np.array([e.cx, e.cy, e.a, e.b, e.theta]),
                      flip, aspect))
  both = info["head"] & info["valid"]
  agree = (got > 0) == (ref > 0)
  assert agree.mean() > 0.999  # the region kept (a pixel may differ on its border)
  diff = np.abs(got - ref)[both & (got > 0)]
  print(f"\njnp vs OpenCV {case} flip={flip} aspect={aspect}: region agreement "
        f"{agree.mean():.4f}, |diff| mean {diff.mean():.3f} max {diff.max():.3f}")
  assert diff.mean() < 0.005 and diff.max() < 0.05, (diff.mean(), diff.max())


def test_jnp_twin_vmaps_over_a_batch():
  import jax
  es = [_ellipse(*c) for c in CASES[1:4]]
  imgs = np.stack([cv2.GaussianBlur(_scene(e), (0, 0), 3.0) for e in es]).astype(np.float32)
  params = np.array([[e.cx, e.cy, e.a, e.b, e.theta] for e in es], np.float32)
  flips = np.array([False, True, False])
  batched = jax.jit(jax.vmap(lambda im, el, f: align.aligned_head_jnp(im, el, size=SIZE,
                                                                       flip=f)))
  out = np.asarray(batched(imgs, params, flips))
  assert out.shape == (3, *SIZE)
  for k in range(3):
    one = np.asarray(align.aligned_head_jnp(imgs[k], params[k], size=SIZE, flip=flips[k]))
    np.testing.assert_allclose(out[k], one, atol=1e-3)


def test_large_downscale_is_area_averaged_not_aliased():
  # A head 1,000 px wide shrunk ~10x: the crop of a fine checkerboard is its mean grey,
  # not a moire pattern.
  e = Ellipse(800.0, 600.0, 500.0, 400.0, 0.3)
  yy, xx = np.mgrid[0:1200, 0:1600]
  img = (((yy + xx) % 2) * 200).astype(np.uint8)
  crop, info = align.aligned_head(img, e, size=SIZE)
  inner = crop[info["head"] & info["valid"]]
  assert abs(float(inner.mean()) - 100) < 6 and float(inner.std()) < 12


def test_ellipse_from_mask_recovers_the_ellipse_and_names_bad_masks():
  e = _ellipse(200.0, 150.0, 110.0, 85.0, 25.0)
  fit = align.ellipse_from_mask(ellipse_fit.rasterize(e, (300, 400)))
  assert fit.cx == pytest.approx(e.cx, abs=0.2) and fit.cy == pytest.approx(e.cy, abs=0.2)
  assert fit.a == pytest.approx(e.a, abs=0.3) and fit.b == pytest.approx(e.b, abs=0.3)
  assert math.degrees(abs(fit.theta - e.theta)) < 0.5
  # The same fit as biometry's on the whole image, also for a head cut by the border.
  for cut in (e, _ellipse(60.0, 280.0, 110.0, 85.0, 25.0)):
    m = ellipse_fit.rasterize(cut, (300, 400))
    ref = ellipse_fit.ellipse_from_mask(m.astype(np.float32))
    got = align.ellipse_from_mask(m)
    np.testing.assert_allclose([got.cx, got.cy, got.a, got.b, got.theta],
                               [ref.cx, ref.cy, ref.a, ref.b, ref.theta], atol=1e-9)
  with pytest.raises(ValueError, match="empty.png: no head ellipse"):
    align.ellipse_from_mask(np.zeros((50, 60), np.uint8), name="empty.png")
  with pytest.raises(ValueError, match="HxW mask"):
    align.ellipse_from_mask(np.zeros((5, 5, 3)), name="rgb")


def test_batched_helper_keeps_order_and_marks_missing_heads():
  es = [_ellipse(*CASES[0]), None, _ellipse(*CASES[1])]
  imgs = [_scene(es[0]), np.zeros((50, 70), np.uint8), _scene(es[2], (320, 410))]
  crops, infos = align.aligned_heads(imgs, es, size=SIZE, flip=[False, False, True])
  assert crops.shape == (3, *SIZE)
  assert infos[1] is None and not crops[1].any()
  one, _ = align.aligned_head(imgs[2], es[2], size=SIZE, flip=True)
  np.testing.assert_array_equal(crops[2], one)
  stretched, infos2 = align.aligned_heads(imgs, es, size=SIZE, pixel_aspect=[1.0, 1.0, 1.5])
  assert infos2[2]["alignment"].pixel_aspect == 1.5 and infos2[0]["alignment"].pixel_aspect == 1
  with pytest.raises(ValueError, match="3 images but 2 pixel_aspect values"):
    align.aligned_heads(imgs, es, pixel_aspect=[1.0, 2.0])
  with pytest.raises(ValueError, match="2 images but 1 ellipses"):
    align.aligned_heads(imgs[:2], es[:1])
  with pytest.raises(ValueError, match="not a usable head ellipse"):
    align.aligned_head(imgs[0], Ellipse(1.0, 1.0, 0.0, 0.0, 0.0))


# ---------------------------------------------------------------------------
# Real HC18 heads with their annotated ellipses

HC18_IMAGES = ("010_HC.png", "204_HC.png", "400_HC.png", "721_HC.png")


@pytest.mark.real_data
def test_real_hc18_heads_align(real_manual_dir: pathlib.Path):
  from fbjax.data import builders
  hc18 = builders.builder_module("hc18")
  root = real_manual_dir / "hc18" / "training_set"
  names = [n for n in HC18_IMAGES if (root / n).exists()]
  assert len(names) >= 3, sorted(os.listdir(root))[:5]
  for name in names:
    image = cv2.imread(str(root / name), cv2.IMREAD_GRAYSCALE)
    ann = cv2.imread(str(root / name.replace(".png", "_Annotation.png")), cv2.IMREAD_GRAYSCALE)
    mask, _ = hc18.fill_outline(ann, name)
    e = align.ellipse_from_mask(mask, name=name)
    crop, info = align.aligned_head(image, e, size=SIZE)
    mcrop, _ = align.aligned_head(mask.astype(np.float32), e, size=SIZE, margin=0.5)
    fit = ellipse_fit.ellipse_from_mask(mcrop)
    assert math.degrees(min(fit.theta, math.pi - fit.theta)) < 1.5, (name, fit)
    assert abs(fit.cx - (SIZE[1] - 1) / 2) < 0.6 and abs(fit.cy - (SIZE[0] - 1) / 2) < 0.6
    assert 2 * fit.a == pytest.approx(FRACTION * SIZE[1], rel=0.02), name
    assert not crop[~info["head"]].any()
    # The skull (the brightest structure of the head) is on the crop, near the ellipse.
    assert crop[info["head"]].mean() > 20, name
