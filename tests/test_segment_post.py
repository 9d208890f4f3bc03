"""The head-ellipse methods: prototype baseline, plain fit, ellipse-aware fits."""

import numpy as np
import pytest

from fbjax.core import metrics
from fbjax.geometry import ellipse_fit, preprocess, segment_post
from fbjax.geometry.ellipse_fit import Ellipse


def test_prototype_finds_a_bright_disc_and_no_more():
  rng = np.random.default_rng(0)
  e = Ellipse.make(90.0, 70.0, 40.0, 30.0, 0.3)
  head = ellipse_fit.rasterize(e, (140, 180))
  img = np.clip(40 + 180 * head + rng.normal(0, 10, head.shape), 0, 255).astype(np.uint8)
  mask, _ = segment_post.prototype_mask(img)
  assert float(metrics.dice(mask, head)) > 0.97
  f = segment_post.head_ellipse("prototype", image=img)
  assert f.perimeter == pytest.approx(e.perimeter, rel=0.03)
  # Float input in [0, 1] is the same image.
  f2 = segment_post.head_ellipse("prototype", image=img / 255.0)
  assert f2.perimeter == pytest.approx(f.perimeter, rel=1e-6)


def test_prototype_on_blank_image():
  mask, c = segment_post.prototype_mask(np.zeros((50, 60), np.uint8))
  assert c is None and mask.sum() == 0
  assert segment_post.head_ellipse("prototype", image=np.zeros((50, 60))) is None


def _network_like(orig_hw=(540, 800), out_hw=(128, 192), spacing=0.15, blob=True):
  e = Ellipse.make(410.0, 260.0, 200.0, 160.0, 0.3)
  head = ellipse_fit.rasterize(e, orig_hw).astype(np.float32)
  if blob:  # a false-positive region stuck to the head (e.g. the placenta)
    head = np.maximum(head, ellipse_fit.rasterize(Ellipse.make(620.0, 250.0, 70.0, 50.0, 0.0),
                                               orig_hw))
  prob, g = preprocess.letterbox(head, out_hw)
  return e, prob, g, spacing


@pytest.mark.parametrize("method", segment_post.NETWORK_METHODS)
def test_network_methods_on_a_clean_map(method):
  e, prob, g, _ = _network_like(blob=False)
  f = segment_post.head_ellipse(method, prob=prob, geometry=g)
  tol = 0.02 if method == "plain" else 0.005  # plain: contour of pixel centres runs inside
  assert f.perimeter == pytest.approx(e.perimeter, rel=tol)
  assert f.cx == pytest.approx(e.cx, abs=3.0) and f.cy == pytest.approx(e.cy, abs=3.0)


def test_robust_fit_ignores_a_stuck_on_blob():
  e, prob, g, _ = _network_like(blob=True)
  robust = segment_post.head_ellipse("robust", prob=prob, geometry=g)
  plain = segment_post.head_ellipse("plain", prob=prob, geometry=g)
  assert robust.perimeter == pytest.approx(e.perimeter, rel=0.01)
  assert abs(plain.perimeter / e.perimeter - 1) > 0.05


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown method"):
    segment_post.head_ellipse("nope", prob=np.zeros((8, 8)))
  with pytest.raises(ValueError, match="needs the original image"):
    segment_post.head_ellipse("prototype", prob=np.zeros((8, 8)))
  with pytest.raises(ValueError, match="needs the head probability"):
    segment_post.head_ellipse("robust", image=np.zeros((8, 8)))
  assert segment_post.head_ellipse("robust", prob=np.zeros((32, 32))) is None
  assert segment_post.head_ellipse("plain", prob=np.zeros((32, 32))) is None
