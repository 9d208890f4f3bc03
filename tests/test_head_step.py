"""The head step (`fbjax.evaluation.heads`): one image, one verdict and one crop, whether
training cuts its aligned head, the segmentation evaluation measures it or `launch.predict`
reads it."""

import math

import cv2
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import special

from fbjax import predict
from fbjax.data import aligned, sources
from fbjax.evaluation import head_tables, heads, segment_eval
from tests import classify_util
from tests.test_predict import SEG_SIZE

pytestmark = pytest.mark.xdist_group("predict")

CROP = (24, 32)
HW = (300, 400)
# The segmentation grid's scale and the image's place on it (letterbox of HW on SEG_SIZE).
SCALE = min(SEG_SIZE[0] / HW[0], SEG_SIZE[1] / HW[1])


def _ellipse_segmenter(a: float, b: float, theta: float = 0.3):
  """Head = an ellipse (semi-axes a, b grid pixels) at the grid centre; skull, brain."""
  h, w = SEG_SIZE
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  c, s = math.cos(theta), math.sin(theta)
  u, v = (xx - (w - 1) / 2), (yy - (h - 1) / 2)
  r = np.sqrt(((c * u + s * v) / a) ** 2 + ((-s * u + c * v) / b) ** 2)
  head = special.expit((1 - r) * 4 * b)
  brain = special.expit((0.8 - r) * 4 * b)
  probs = jnp.asarray(np.stack([head, head - brain, brain], -1))

  def fn(images):
    return jnp.broadcast_to(probs, (images.shape[0], *probs.shape))

  return heads.Segmenter(size=SEG_SIZE, predict=fn, method="direct")


def _image(a: float, b: float, theta: float = 0.3, seed: int = 0) -> np.ndarray:
  """Speckle with a bright skull ring where `_ellipse_segmenter(a, b)` puts the head."""
  rng = np.random.default_rng(seed)
  img = cv2.GaussianBlur(rng.uniform(40, 160, HW).astype(np.uint8), (0, 0), 2)
  centre = ((HW[1] - 1) / 2, (HW[0] - 1) / 2)
  axes = (0.94 * a / SCALE, 0.94 * b / SCALE)
  cv2.ellipse(img, (round(centre[0]), round(centre[1])), (round(axes[0]), round(axes[1])),
              math.degrees(theta), 0, 360, 255, max(1, round(0.1 * b / SCALE)))
  return img


def _example(img: np.ndarray, name: str) -> dict:
  empty = np.zeros((*HW, 1), np.uint8)
  return {"id": name, "group": name, "image": img[..., None],
          **{f"{c}_mask": empty for c in ("head", "skull", "brain")},
          **{f"has_{c}_mask": False for c in ("head", "skull", "brain")},
          "pixel_spacing_mm": np.float32(math.nan), "pixel_aspect": np.float32(1.0),
          "plane": 0, "abnormal": 0, "condition": 0}


CASES = {   # name: (segmenter's head semi-axes on the grid, verdict, reason)
    "head": ((9.0, 7.5), "ok", ""),
    "sliver": ((13.0, 4.5), "no_head", "ellipse axis ratio 0.35 < 0.45"),   # the shape rule
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return classify_util.fake_workdir(tmp_path_factory.mktemp("aligned_step"),
                                    classify_util.aligned_config(CROP), with_anomaly=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_evaluation_and_prediction_give_one_verdict_and_one_crop(workdir, tmp_path,
                                                                          name):
  (a, b), want, reason = CASES[name]
  seg = _ellipse_segmenter(a, b)
  img = _image(a, b)
  path = tmp_path / f"{name}.png"
  cv2.imwrite(str(path), img)
  ex = _example(img, name)
  align_cfg = ml_collections.ConfigDict(dict(size=CROP, head_fraction=0.8, margin=0.08))

  # Training: the ellipse table of the head step, the crop of the data layer.
  ell, kinds = head_tables.compute_table(sources.ListSource([ex]), segmenter=seg)
  # The segmentation evaluation (launch.evaluate of a segmenter): the row's verdict.
  x, g = segment_eval.grid_input(ex, SEG_SIZE)
  row, _ = segment_eval.measure_example(ex, np.asarray(seg.predict(x[None]))[0], g,
                                        methods=("direct",), grid_image=x,
                                        head_method=seg.method)
  # Prediction: the row of launch.predict and the crop its classifier read.
  p = predict.Predictor(workdir, segmenter=seg, batch_size=2)
  got = dict(predict.iterate(p, [path]))["row"]
  item = p.prepare(path)
  located = p.locate(item, np.asarray(seg.predict(item.grids[SEG_SIZE][None]))[0])
  np.testing.assert_array_equal(item.grids[SEG_SIZE], x)    # one grid: what the segmenter reads

  assert got["seg_quality"] == row["seg_quality"] == located["seg_quality"] == want
  if want != "ok":
    assert kinds[0] == 0 and np.isnan(ell[0]).all()      # training leaves it out
    assert "_crops" not in located and got["plane"] == "" and math.isnan(got["abnormal_prob"])
    assert got["no_head_reason"] == row["no_head_reason"] == reason
    with pytest.raises(ValueError, match="no example has a usable head"):
      aligned.aligned_source(sources.ListSource([ex]), ell, align_cfg)
    return
  assert kinds[0] == aligned.KINDS.index("segmenter")
  e = located["_ellipse"]
  np.testing.assert_allclose(ell[0], [e.cx, e.cy, e.a, e.b, e.theta], rtol=0, atol=1e-9)
  train_src, counts = aligned.aligned_source(sources.ListSource([ex]), ell, align_cfg)
  assert counts == {"total": 1, "no_head": 0}
  train_crop = train_src[0]["image"][..., 0].astype(np.float32) / 255.0
  np.testing.assert_array_equal(located["_crops"][0], train_crop)
  np.testing.assert_array_equal(located["_crops"][1], train_crop[::-1, ::-1])
  assert got["plane"] != ""


def test_a_blank_image_is_no_head_everywhere(workdir, tmp_path):
  seg = _ellipse_segmenter(9.0, 7.5)
  img = np.zeros(HW, np.uint8)
  cv2.imwrite(str(tmp_path / "blank.png"), img)
  ex = _example(img, "blank")
  ell, _ = head_tables.compute_table(sources.ListSource([ex]), segmenter=seg)
  x, g = segment_eval.grid_input(ex, SEG_SIZE)
  row, _ = segment_eval.measure_example(ex, np.asarray(seg.predict(x[None]))[0], g,
                                        methods=("direct",), grid_image=x, head_method="direct")
  got = dict(predict.iterate(predict.Predictor(workdir, segmenter=seg, batch_size=2),
                             [tmp_path / "blank.png"]))["row"]
  assert np.isnan(ell).all()
  assert got["seg_quality"] == row["seg_quality"] == "no_head"
  assert got["no_head_reason"] == row["no_head_reason"]
  assert got["no_head_reason"].startswith("spread 0 < ")


def test_hand_computed_verdicts():
  """The rule on hand-made cases: a disc, a spacing that puts its HC out of range, no head
  pixels, a head cut by the image's edge, a ground-truth mask."""
  img = _image(9.0, 7.5)
  grid_img, g = heads.grid(img, SEG_SIZE)
  probs = np.asarray(_ellipse_segmenter(9.0, 7.5).predict(np.zeros((1, *SEG_SIZE))))[0]
  h = heads.from_segmentation(grid_img, probs, g, HW, method="direct")
  assert h.quality == "ok" and h.found and h.reason == ""
  # Semi-axes 9 and 7.5 grid px at SCALE: HC (Ramanujan) in original px.
  a, b = 9.0 / SCALE, 7.5 / SCALE
  hc = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
  assert h.px().hc_mm == pytest.approx(hc, rel=0.02)
  assert heads.with_spacing(h, 0.2) is h                        # HC ~ 0.2 * 470 px: in range
  far = heads.with_spacing(h, 5.0)
  assert far.quality == "no_head" and not far.found and far.reason.startswith("hc_mm ")
  assert heads.with_spacing(h, 5.0, check=False) is h
  none = heads.from_segmentation(grid_img, np.zeros_like(probs), g, HW)
  assert (none.quality, none.reason) == ("no_head", "no head pixels")
  # A head whose centre sits near the left edge of the image: a third of it outside.
  shifted = np.roll(probs, -int(round(SEG_SIZE[1] / 2 - 2 - 3)), axis=1)
  shifted[:, -12:] = 0
  cut = heads.from_segmentation(grid_img, shifted, g, HW, method="direct", gate={})
  assert cut.quality == "cut_by_border" and cut.found
  # A 16-bit image gives the crop of its 8-bit version.
  e = h.ellipse
  img16 = (img.astype(np.uint16) * 257)
  np.testing.assert_array_equal(heads.crop(img16, e, size=CROP), heads.crop(img, e, size=CROP))
  with pytest.raises(ValueError, match="int32"):
    heads.crop(img.astype(np.int32), e, size=CROP)
  mask = np.zeros(HW, np.uint8)
  cv2.ellipse(mask, (200, 150), (80, 60), 0, 0, 360, 1, -1)
  m = heads.from_mask(mask)
  assert m.quality == "ok" and m.source == "mask"
  assert (m.ellipse.a, m.ellipse.b) == pytest.approx((80, 60), abs=1.0)
  sliver = np.zeros(HW, np.uint8)
  cv2.ellipse(sliver, (200, 150), (80, 20), 0, 0, 360, 1, -1)
  assert heads.from_mask(sliver).quality == "no_head"


def test_quality_counts_say_how_many_large_errors_the_verdict_flags():
  rows = [{"seg_quality": q, "ref_hc_mm": ref, "robust_hc_rel": rel}
          for q, ref, rel in [("ok", 100.0, 0.02), ("poor_fit", 100.0, 0.30),
                              ("ok", 100.0, 0.15), ("cut_by_border", 100.0, 0.05),
                              ("no_head", 100.0, math.nan), ("ok", math.nan, math.nan)]]
  got = segment_eval.quality_counts(rows, "robust")
  assert got["counts"] == {"ok": 3, "poor_fit": 1, "cut_by_border": 1, "no_head": 1}
  # Above 10 %: 0.30 (flagged), 0.15 (not), NaN (a failed fit, flagged); within: 0.02, 0.05.
  assert got["over_10pct"] == {"n": 3, "flagged": 2}
  assert got["within_10pct"] == {"n": 2, "flagged": 1}
  assert "over_10pct" not in segment_eval.quality_counts(rows, "plain")
