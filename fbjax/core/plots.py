"""Small figures drawn with OpenCV (no matplotlib): for dashboards and HTML reports.

Every function returns an RGB uint8 image (H, W, 3):

    confusion_image(cm, class_names)       counts, rows normalised to colour
    roc_image({"model": (fpr, tpr)}, ...)   ROC curves with their AUROC in the legend
    histogram_image(values, ...)            a histogram, optional threshold line
    label_grid(images, texts, ...)          thumbnails with a caption each
    overlay(image, masks=..., ellipse=...)  an image with coloured masks and an ellipse
    heatmap_overlay(image, heat)            a saliency/occlusion map over an image
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127))


def _text(img, s, org, scale=0.4, colour=(0, 0, 0), thickness=1):
  cv2.putText(img, str(s), (int(org[0]), int(org[1])), FONT, scale, colour, thickness,
              cv2.LINE_AA)


def to_rgb_uint8(image) -> np.ndarray:
  """Grey float [0, 1] / uint8 (H, W) or RGB -> RGB uint8."""
  a = np.asarray(image)
  if a.dtype != np.uint8:
    a = np.clip(np.rint(np.asarray(a, np.float32) * 255.0), 0, 255).astype(np.uint8)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, axis=-1)
  return np.ascontiguousarray(a)


def confusion_image(cm, class_names: Sequence[str], cell: int = 28) -> np.ndarray:
  cm = np.asarray(cm, np.int64)
  k = cm.shape[0]
  names = [str(n)[:14] for n in class_names]
  left = 8 + 7 * max(len(n) for n in names)
  top = 8 + 7 * max(len(n) for n in names)
  img = np.full((top + k * cell + 30, left + k * cell + 10, 3), 255, np.uint8)
  rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
  for i in range(k):
    for j in range(k):
      v = rows[i, j]
      colour = tuple(int(255 - v * (255 - c)) for c in (8, 48, 107))
      y0, x0 = top + i * cell, left + j * cell
      cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), colour, -1)
      if cm[i, j]:
        _text(img, cm[i, j], (x0 + 3, y0 + cell // 2 + 4), 0.33,
              (255, 255, 255) if v > 0.5 else (0, 0, 0))
  for i, n in enumerate(names):
    _text(img, n, (4, top + i * cell + cell // 2 + 4), 0.33)
  # Column names written vertically (rotate a strip).
  strip = np.full((cell * k, top, 3), 255, np.uint8)
  for j, n in enumerate(names):
    _text(strip, n, (4, j * cell + cell // 2 + 4), 0.33)
  img[:top, left:left + k * cell] = np.rot90(strip)[:top, :k * cell]
  _text(img, "rows: true class, columns: predicted", (4, img.shape[0] - 10), 0.35)
  return img


def _axes(size: int, margin: int):
  img = np.full((size, size, 3), 255, np.uint8)
  x0, y0, x1, y1 = margin, 10, size - 10, size - margin
  cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
  return img, (x0, y0, x1, y1)


def roc_image(curves: Mapping[str, tuple], size: int = 320,
              points: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
  """ROC curves {name: (fpr, tpr)} (+ optional operating points {name: (fpr, tpr)})."""
  margin = 36
  img, (x0, y0, x1, y1) = _axes(size, margin)
  to_px = lambda f, t: (int(round(x0 + f * (x1 - x0))), int(round(y1 - t * (y1 - y0))))
  cv2.line(img, to_px(0, 0), to_px(1, 1), (200, 200, 200), 1)
  for i, (name, (fpr, tpr)) in enumerate(curves.items()):
    pts = np.array([to_px(f, t) for f, t in zip(fpr, tpr, strict=True)], np.int32)
    c = COLOURS[i % len(COLOURS)]
    cv2.polylines(img, [pts], False, c, 2, cv2.LINE_AA)
    _text(img, name, (x0 + 60, y1 - 12 - 14 * i), 0.38, c)
  for i, (_, (f, t)) in enumerate((points or {}).items()):
    cv2.circle(img, to_px(f, t), 4, COLOURS[i % len(COLOURS)], -1)
  _text(img, "false positive rate", (x0 + 40, size - 8), 0.4)
  _text(img, "0", (x0 - 10, y1 + 14), 0.35)
  _text(img, "1", (x1 - 6, y1 + 14), 0.35)
  strip = np.full((margin - 8, y1 - y0, 3), 255, np.uint8)
  _text(strip, "true positive rate", (40, 18), 0.4)
  img[y0:y1, 2:margin - 6] = np.rot90(strip, 1)[: y1 - y0, : margin - 8]
  return img


def histogram_image(values, *, bins: int = 30, title: str = "", threshold: float | None = None,
                    size: tuple[int, int] = (200, 320), value_range=None) -> np.ndarray:
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  h, w = size
  img = np.full((h, w, 3), 255, np.uint8)
  _text(img, title, (6, 14), 0.4)
  if not v.size:
    _text(img, "no values", (w // 3, h // 2), 0.4)
    return img
  lo, hi = value_range or (float(v.min()), float(v.max()))
  if hi <= lo:
    hi = lo + 1.0
  counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
  x0, x1, y0, y1 = 8, w - 8, 22, h - 22
  bw = (x1 - x0) / bins
  for i, c in enumerate(counts):
    top = y1 - int(round((y1 - y0) * c / max(counts.max(), 1)))
    cv2.rectangle(img, (int(x0 + i * bw), top), (int(x0 + (i + 1) * bw) - 1, y1),
                  COLOURS[0], -1)
  _text(img, f"{lo:.3g}", (x0, h - 6), 0.35)
  _text(img, f"{hi:.3g}", (x1 - 40, h - 6), 0.35)
  if threshold is not None and lo <= threshold <= hi:
    tx = int(x0 + (threshold - lo) / (hi - lo) * (x1 - x0))
    cv2.line(img, (tx, y0), (tx, y1), COLOURS[3], 2)
  return img


def label_grid(images: Sequence[np.ndarray], texts: Sequence[str], *, columns: int = 4,
               thumb: int = 128) -> np.ndarray:
  """Thumbnails (grey or RGB) with a caption line (or '\\n'-separated lines) under each."""
  n = len(images)
  rows = max(1, -(-n // columns))
  lines = max((len(t.split("\n")) for t in texts), default=1)
  cap = 14 * lines + 4
  out = np.full((rows * (thumb + cap), columns * thumb, 3), 255, np.uint8)
  for i, (im, t) in enumerate(zip(images, texts, strict=True)):
    r, c = divmod(i, columns)
    a = to_rgb_uint8(im)
    s = thumb / max(a.shape[:2])
    a = cv2.resize(a, (max(1, round(a.shape[1] * s)), max(1, round(a.shape[0] * s))),
                   interpolation=cv2.INTER_AREA)
    y, x = r * (thumb + cap), c * thumb
    out[y:y + a.shape[0], x:x + a.shape[1]] = a
    for k, line in enumerate(t.split("\n")):
      _text(out, line, (x + 3, y + thumb + 13 + 14 * k), 0.35)
  return out


MASK_COLOURS = {"head": (255, 60, 60), "skull": (255, 220, 0), "brain": (0, 220, 255)}


def overlay(image, *, masks: Mapping[str, np.ndarray] | None = None, ellipse=None,
            text: str = "", alpha: float = 0.35) -> np.ndarray:
  """Masks (HxW, nonzero inside; outlines + tint), a fitted ellipse (red), a caption."""
  out = to_rgb_uint8(image).copy()
  for name, m in (masks or {}).items():
    m = np.asarray(m) > 0
    if not m.any():
      continue
    c = np.array(MASK_COLOURS.get(name, COLOURS[0]), np.float32)
    out[m] = (out[m] * (1 - alpha) + c * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(v) for v in c), 1)
  if ellipse is not None:
    cv2.ellipse(out, ((float(ellipse.cx), float(ellipse.cy)),
                      (2 * float(ellipse.a), 2 * float(ellipse.b)),
                      float(np.degrees(ellipse.theta))), (255, 0, 0),
                max(1, round(max(out.shape[:2]) / 300)), cv2.LINE_AA)
  if text:
    scale = max(0.35, max(out.shape[:2]) / 900)
    for k, line in enumerate(text.split("\n")):
      org = (5, int(16 * scale / 0.4) * (k + 1))
      _text(out, line, org, scale, (0, 0, 0), 3)
      _text(out, line, org, scale, (255, 255, 255), 1)
  return out


def heatmap_overlay(image, heat, alpha: float = 0.45) -> np.ndarray:
  """`heat` (any HxW, resized to the image) normalised to [0, 1] in a JET colour map."""
  base = to_rgb_uint8(image)
  h = np.asarray(heat, np.float32)
  h = cv2.resize(h, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
  lo, hi = float(h.min()), float(h.max())
  h = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
  cmap = cv2.applyColorMap(np.uint8(255 * h), cv2.COLORMAP_JET)[..., ::-1]
  return (base * (1 - alpha) + cmap * alpha).astype(np.uint8)
