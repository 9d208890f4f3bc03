"""Enhancement filters: pure, batched, jittable `jnp` functions.

Every filter takes a batch of grey images `x` of shape (B, H, W), float32 with
values in [0, 1] (the pipeline's `image`), and returns an array of the same
shape and dtype. Parameters given as Python numbers are static; parameters
documented as "array-like" may also be traced values (so a linen wrapper can
learn them).

Conventions shared by all filters:
- Intensities are in [0, 1]. Where OpenCV works in 8-bit units (the bilateral
  filter's colour sigma), fbjax divides by 255: `sigma_color=0.1` here is
  `sigmaColor=25.5` in `cv2.bilateralFilter`.
- The histogram filters (`equalize_hist`, `clahe`, `prototype`) work on 256
  grey levels like OpenCV: the input is clipped to [0, 1] and rounded to
  `round(255 x)`, and the output is a multiple of 1/255.
- Borders follow OpenCV's defaults: mirror without repeating the edge pixel
  (`BORDER_REFLECT_101`, numpy's "reflect") for the bilateral filter, NLM,
  Gaussian blur and CLAHE's padding; edge replication for the median
  (`cv2.medianBlur` replicates) and for SRAD (the paper's Neumann condition).
- Bad input: an array that is not (B, H, W) or not floating point raises
  `ValueError` at trace time. An image containing a non-finite value (NaN,
  inf) gives an all-NaN output image; the other images of the batch are
  unaffected. An empty batch (B = 0) gives an empty batch.
- Accumulations run in float32 in a fixed order, so jitted and unjitted
  results agree to float32 rounding.

References: Yu & Acton 2002 (SRAD), Tomasi & Manduchi 1998 (bilateral),
Buades, Coll & Morel 2005 (non-local means), Brox & Cremers 2007 (iterated NLM),
Zuiderveld 1994 (CLAHE).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------
# Input checks and helpers
# ---------------------------------------------------------------------------


def _as_batch(x, name: str) -> jax.Array:
  """Checks the (B, H, W) float contract; returns float32."""
  x = jnp.asarray(x)
  if x.ndim != 3:
    raise ValueError(f"{name}: expected a batch of grey images (B, H, W), got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: expected float images in [0, 1], got dtype {x.dtype} "
                     "(divide 8-bit images by 255)")
  if x.shape[1] < 1 or x.shape[2] < 1:
    raise ValueError(f"{name}: images must be at least 1x1, got shape {x.shape}")
  return x.astype(jnp.float32)


def _bad(x: jax.Array) -> jax.Array:
  """(B, 1, 1) True where an image holds a non-finite value."""
  return ~jnp.isfinite(x).all(axis=(1, 2), keepdims=True)


def _finite(x: jax.Array) -> jax.Array:
  return jnp.where(jnp.isfinite(x), x, 0.0)


def _poison(bad: jax.Array, out: jax.Array) -> jax.Array:
  return jnp.where(bad, jnp.nan, out)


def check_images(x, name: str = "images") -> np.ndarray:
  """Host-side validation (outside jit): raises `ValueError` naming the problem.

  Checks shape (B, H, W), a floating dtype, finiteness and the [0, 1] range,
  and names the first offending image. Returns the images as float32 numpy.
  """
  a = np.asarray(x)
  if a.ndim != 3:
    raise ValueError(f"{name}: expected a batch of grey images (B, H, W), got shape {a.shape}")
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f"{name}: expected float images in [0, 1], got dtype {a.dtype} "
                     "(divide 8-bit images by 255)")
  bad = ~np.isfinite(a).all(axis=(1, 2))
  if bad.any():
    raise ValueError(f"{name}: image {int(np.argmax(bad))} contains NaN or inf "
                     f"({int(bad.sum())} of {len(a)} images)")
  if a.size and (a.min() < 0 or a.max() > 1):
    raise ValueError(f"{name}: values must lie in [0, 1], got [{a.min():.4g}, {a.max():.4g}]")
  return a.astype(np.float32)


def _border_index(n: int, r: int, mode: str) -> np.ndarray:
  """Source indices of a length-n axis padded by r on both sides."""
  i = np.arange(-r, n + r)
  if mode == "edge":
    return np.clip(i, 0, n - 1)
  if mode == "reflect" and n > 1:     # OpenCV BORDER_REFLECT_101: dcb|abcd|cba
    period = 2 * n - 2
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)
  period = 2 * n                      # BORDER_REFLECT (numpy "symmetric"): cba|abcd|dcb
  i = np.mod(i, period)
  return np.where(i >= n, period - 1 - i, i)


def _rounded(p: jax.Array) -> jax.Array:
  """`p` itself, but opaque to the compiler's multiply-add contraction.

  XLA (CPU and GPU) fuses `a * b + c` into one FMA, rounding once instead of
  twice. A select on a value the compiler cannot know keeps the product a
  separately rounded float32, as in OpenCV's C++ code. (NaN becomes 0 here;
  images with NaN are poisoned anyway.)
  """
  return jnp.where(jnp.isnan(p), 0.0, p)


def _pad(x: jax.Array, ry: int, rx: int, mode: str) -> jax.Array:
  """Pads the H and W axes by a static gather (cheaper than `jnp.pad` on CPU).

  `mode`: "reflect" (OpenCV's default BORDER_REFLECT_101), "symmetric"
  (BORDER_REFLECT) or "edge" (BORDER_REPLICATE). Pads wider than the image
  keep reflecting periodically, as OpenCV does.
  """
  iy = _border_index(x.shape[1], ry, mode)
  ix = _border_index(x.shape[2], rx, mode)
  return x[:, iy][:, :, ix]


def _shift(xp: jax.Array, dy: int, dx: int, h: int, w: int) -> jax.Array:
  return xp[:, dy:dy + h, dx:dx + w]


def gaussian_kernel(sigma: float, radius: int | None = None) -> np.ndarray:
  """Normalised 1-D Gaussian, as `cv2.getGaussianKernel(2 r + 1, sigma)` (sigma > 0)."""
  if sigma <= 0:
    raise ValueError(f"gaussian_kernel: sigma must be > 0, got {sigma}")
  r = int(math.ceil(3 * sigma)) if radius is None else int(radius)
  t = np.arange(-r, r + 1, dtype=np.float64)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def _sep_conv(x: jax.Array, ky: np.ndarray, kx: np.ndarray, mode: str | None) -> jax.Array:
  """Separable correlation with 1-D kernels; `mode=None` means "valid" (no padding)."""
  ry, rx = len(ky) // 2, len(kx) // 2
  if mode is not None:
    x = _pad(x, ry, rx, mode)
  h, w = x.shape[1] - 2 * ry, x.shape[2] - 2 * rx
  rows = sum(float(kx[i]) * x[:, :, i:i + w] for i in range(len(kx)))
  return sum(float(ky[i]) * rows[:, i:i + h, :] for i in range(len(ky)))


def gaussian_blur(x, sigma: float, radius: int | None = None) -> jax.Array:
  """Gaussian blur with reflect-101 borders (`cv2.GaussianBlur` on float32)."""
  x = _as_batch(x, "gaussian_blur")
  k = gaussian_kernel(sigma, radius)
  return _poison(_bad(x), _sep_conv(x, k, k, "reflect"))


# ---------------------------------------------------------------------------
# Median (selection network)
# ---------------------------------------------------------------------------


@functools.cache
def _median_network(n: int):
  """Min/max DAG that returns the median of n (odd) inputs.

  Batcher's odd-even merge sort on the next power of two, with the extra
  wires fixed at -inf / +inf so the median lands on a known wire; constant
  wires are resolved while building and only the comparators the output
  depends on are evaluated (lazily, in `_eval`).
  """
  size = 1 << (n - 1).bit_length()
  lo = (size - n) // 2
  wires = [("lo",)] * lo + [("in", i) for i in range(n)] + [("hi",)] * (size - n - lo)
  pairs = []

  def merge(a, length, r):
    step = r * 2
    if step < length:
      merge(a, length, step)
      merge(a + r, length, step)
      for i in range(a + r, a + length - r, step):
        pairs.append((i, i + r))
    else:
      pairs.append((a, a + r))

  def sort(a, length):
    if length > 1:
      m = length // 2
      sort(a, m)
      sort(a + m, m)
      merge(a, length, 1)

  sort(0, size)
  for i, j in pairs:
    a, b = wires[i], wires[j]
    if a[0] == "lo" or b[0] == "hi":
      continue
    if a[0] == "hi" or b[0] == "lo":
      wires[i], wires[j] = b, a
      continue
    wires[i], wires[j] = ("min", a, b), ("max", a, b)
  return wires[lo + n // 2]


def _eval(node, inputs, memo):
  key = node
  if key in memo:
    return memo[key]
  if node[0] == "in":
    out = inputs[node[1]]
  else:
    a, b = _eval(node[1], inputs, memo), _eval(node[2], inputs, memo)
    out = jnp.minimum(a, b) if node[0] == "min" else jnp.maximum(a, b)
  memo[key] = out
  return out


def median(x, size: int = 5) -> jax.Array:
  """Median over a size x size window, edges replicated (`cv2.medianBlur`)."""
  if size < 1 or size % 2 == 0:
    raise ValueError(f"median: size must be odd and >= 1, got {size}")
  x = _as_batch(x, "median")
  bad = _bad(x)
  r = size // 2
  h, w = x.shape[1:]
  xp = _pad(x, r, r, "edge")
  inputs = [_shift(xp, dy, dx, h, w) for dy in range(size) for dx in range(size)]
  return _poison(bad, _eval(_median_network(size * size), inputs, {}))


# ---------------------------------------------------------------------------
# Histogram filters (256 grey levels, OpenCV semantics)
# ---------------------------------------------------------------------------


def to_levels(x: jax.Array) -> jax.Array:
  """[0, 1] float -> int32 grey levels round(255 x) in [0, 255] (half to even)."""
  return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.int32)


def _hist(q: jax.Array, length: int) -> jax.Array:
  return jax.vmap(lambda v: jnp.bincount(v.ravel(), length=length))(q)


def equalize_hist(x) -> jax.Array:
  """Global histogram equalisation, exactly as `cv2.equalizeHist` on 8-bit levels.

  The darkest present level maps to 0, the rest to round(255 (cdf - h_min) /
  (N - h_min)) in float32; a constant image is returned unchanged (OpenCV).
  """
  x = _as_batch(x, "equalize_hist")
  bad = _bad(x)
  q = to_levels(_finite(x))
  b, h, w = q.shape
  hist = _hist(q, 256)
  first = jnp.argmax(hist > 0, axis=1)
  hmin = jnp.take_along_axis(hist, first[:, None], axis=1)
  denom = jnp.maximum(h * w - hmin, 1).astype(jnp.float32)
  scale = jnp.float32(255.0) / denom
  lut = jnp.clip(jnp.round((jnp.cumsum(hist, axis=1) - hmin).astype(jnp.float32) * scale), 0, 255)
  out = jnp.take_along_axis(lut, q.reshape(b, h * w), axis=1).reshape(b, h, w)
  out = jnp.where((hmin == h * w)[:, :, None], q.astype(jnp.float32), out)
  return _poison(bad, out / 255.0)


def clahe(x, clip_limit: float = 40.0, tiles: tuple[int, int] = (8, 8)) -> jax.Array:
  """Contrast-limited adaptive histogram equalisation as `cv2.createCLAHE`.

  Args:
    x: (B, H, W) images in [0, 1] (quantised to 256 levels).
    clip_limit: OpenCV's `clipLimit`: a bin holds at most
      max(1, int(clip_limit * tile_area / 256)) counts; the excess is spread
      evenly over all bins, the remainder one count per `256 // remainder`
      bins from level 0. <= 0 disables clipping (plain adaptive equalisation).
    tiles: (rows, cols) of the tile grid. Note the order: OpenCV's
      `tileGridSize=(cols, rows)` is `tiles=(rows, cols)` here.

  When H or W is not a multiple of the grid, the image is padded at the
  bottom and right with reflect-101 for the tile histograms, using OpenCV's
  rule (pad by rows - H % rows and cols - W % cols, a whole tile when one
  side divides). Each pixel bilinearly blends the four nearest tile maps in
  float32 with OpenCV's formula and rounds half to even.
  """
  x = _as_batch(x, "clahe")
  ty, tx = int(tiles[0]), int(tiles[1])
  if ty < 1 or tx < 1:
    raise ValueError(f"clahe: tiles must be positive, got {tiles}")
  bad = _bad(x)
  q = to_levels(_finite(x))
  b, h, w = q.shape
  qe = q
  if h % ty or w % tx:
    iy = _border_index(h, ty - h % ty, "reflect")[ty - h % ty:]
    ix = _border_index(w, tx - w % tx, "reflect")[tx - w % tx:]
    qe = q[:, iy][:, :, ix]
  th, tw = qe.shape[1] // ty, qe.shape[2] // tx
  area = th * tw
  # Tile histograms: one bincount over (tile, level) per image.
  tile_id = (jnp.arange(qe.shape[1]) // th)[:, None] * tx + (jnp.arange(qe.shape[2]) // tw)[None]
  hist = _hist(tile_id[None] * 256 + qe, ty * tx * 256).reshape(b, ty * tx, 256)
  if clip_limit > 0:
    limit = max(int(clip_limit * area / 256), 1)
    clipped = jnp.sum(jnp.maximum(hist - limit, 0), axis=-1, keepdims=True)
    hist = jnp.minimum(hist, limit)
    batch, residual = clipped // 256, clipped % 256
    hist = hist + batch
    step = jnp.maximum(256 // jnp.maximum(residual, 1), 1)
    lv = jnp.arange(256)
    hist = hist + ((lv % step == 0) & (lv // step < residual)).astype(hist.dtype)
  lut_scale = np.float32(255) / np.float32(area)
  lut = jnp.clip(jnp.round(jnp.cumsum(hist, -1).astype(jnp.float32) * lut_scale), 0, 255)
  lut = lut.reshape(b, ty, tx, 256)

  def coords(n, tile, count):
    t = np.arange(n, dtype=np.float32) * (np.float32(1) / np.float32(tile)) - np.float32(0.5)
    i1 = np.floor(t).astype(np.int32)
    a = (t - i1.astype(np.float32)).astype(np.float32)
    return np.maximum(i1, 0), np.minimum(i1 + 1, count - 1), a, (np.float32(1) - a)

  y1, y2, ya, ya1 = coords(h, th, ty)
  x1, x2, xa, xa1 = coords(w, tw, tx)
  flat = lut.reshape(b, ty * tx * 256)

  def pick(yi, xi):
    idx = (yi[:, None] * tx + xi[None, :]) * 256
    return jnp.take_along_axis(flat, (idx[None] + q).reshape(b, h * w), axis=1).reshape(b, h, w)

  xa, xa1, ya, ya1 = (jnp.asarray(v) for v in (xa, xa1, ya, ya1))
  # OpenCV rounds every product before adding; `_rounded` stops XLA from
  # contracting a product and a sum into one fused multiply-add, which would
  # move pixels that sit on a .5 tie (frequent here) to the other level.
  top = _rounded(pick(y1, x1) * xa1[None, None]) + _rounded(pick(y1, x2) * xa[None, None])
  bot = _rounded(pick(y2, x1) * xa1[None, None]) + _rounded(pick(y2, x2) * xa[None, None])
  out = _rounded(top * ya1[None, :, None]) + _rounded(bot * ya[None, :, None])
  return _poison(bad, jnp.clip(jnp.round(out), 0, 255) / 255.0)


def prototype(x) -> jax.Array:
  """The prototype's chain: histogram equalisation, then a 5x5 median."""
  return median(equalize_hist(x), 5)


# ---------------------------------------------------------------------------
# Point operations and sharpening
# ---------------------------------------------------------------------------


def log_compress(x, c=100.0) -> jax.Array:
  """log(1 + c x) / log(1 + c): expands the dark range (c > 0, array-like)."""
  x = _as_batch(x, "log_compress")
  c = jnp.asarray(c, jnp.float32)
  return _poison(_bad(x), jnp.log1p(c * jnp.maximum(x, 0.0)) / jnp.log1p(c))


def gamma(x, g=0.5) -> jax.Array:
  """x ** g on max(x, 0) (g > 0, array-like): g < 1 brightens, g > 1 darkens."""
  x = _as_batch(x, "gamma")
  return _poison(_bad(x), jnp.power(jnp.maximum(x, 0.0), jnp.asarray(g, jnp.float32)))


def unsharp_mask(x, sigma: float = 2.0, amount=1.0, clip: bool = True) -> jax.Array:
  """x + amount (x - GaussianBlur(x, sigma)), clipped to [0, 1] unless `clip=False`."""
  x = _as_batch(x, "unsharp_mask")
  out = x + jnp.asarray(amount, jnp.float32) * (x - gaussian_blur(x, sigma))
  return _poison(_bad(x), jnp.clip(out, 0.0, 1.0) if clip else out)


# ---------------------------------------------------------------------------
# Edge-preserving smoothing
# ---------------------------------------------------------------------------


def bilateral(x, diameter: int = 5, sigma_color=0.1, sigma_space: float = 2.0) -> jax.Array:
  """Bilateral filter (Tomasi & Manduchi 1998) with `cv2.bilateralFilter` semantics.

  Args:
    diameter: window diameter d; radius = d // 2 (or round(1.5 sigma_space)
      when d <= 0), at least 1; only offsets with |offset| <= radius count
      (a disc, as in OpenCV).
    sigma_color: range sigma in [0, 1] intensity units (array-like; OpenCV's
      sigmaColor / 255).
    sigma_space: spatial sigma in pixels (> 0).

  Weights are summed in OpenCV's offset order in float32; borders reflect-101.
  """
  x = _as_batch(x, "bilateral")
  if sigma_space <= 0:
    raise ValueError(f"bilateral: sigma_space must be > 0, got {sigma_space}")
  bad = _bad(x)
  r = max(diameter // 2 if diameter > 0 else round(sigma_space * 1.5), 1)
  h, w = x.shape[1:]
  xp = _pad(x, r, r, "reflect")
  coeff = -0.5 / jnp.square(jnp.asarray(sigma_color, jnp.float32))
  # The range weight is symmetric: w_o(p) = w_-o(p + o). Each exp is computed
  # once for an offset o in one half-plane, on a domain large enough to serve
  # both o at p and -o at p - o (values there come from the padded image, as
  # in OpenCV). The barrier keeps XLA from fusing (and so recomputing) them:
  # half the exps, about 1.5x faster on CPU. Sums then run in OpenCV's order.
  half = {}
  for i in range(0, r + 1):
    for j in range(-r, r + 1):
      if (i == 0 and j <= 0) or i * i + j * j > r * r:
        continue
      y0, x0 = r - i, r - max(j, 0)
      lh, lw = h + i, w + abs(j)
      a = xp[:, y0 + i:y0 + i + lh, x0 + j:x0 + j + lw]
      half[(i, j)] = jnp.exp(coeff * jnp.square(a - xp[:, y0:y0 + lh, x0:x0 + lw]))
  half = jax.lax.optimization_barrier(half)
  weights = {}
  for (i, j), e in half.items():
    x0 = r - max(j, 0)
    weights[(i, j)] = e[:, i:i + h, r - x0:r - x0 + w]
    weights[(-i, -j)] = e[:, :h, r - j - x0:r - j - x0 + w]
  num = jnp.zeros_like(x)
  den = jnp.zeros_like(x)
  for i in range(-r, r + 1):
    for j in range(-r, r + 1):
      dist = math.sqrt(i * i + j * j)
      if dist > r:
        continue
      ws = np.float32(math.exp(-0.5 * dist * dist / (sigma_space * sigma_space)))
      v = _shift(xp, r + i, r + j, h, w)
      wt = ws * weights[(i, j)] if (i, j) != (0, 0) else jnp.full_like(x, ws)
      num = num + v * wt
      den = den + wt
  return _poison(bad, num / den)


def nl_means(x, h=0.1, patch: int = 5, search: int = 11, sigma=0.0, guide=None) -> jax.Array:
  """Exact non-local means (Buades et al. 2005) over a small search window.

  out(p) = sum_q w(p, q) x(q) / sum_q w(p, q) over the `search` x `search`
  window around p, with w = exp(-max(d2 - 2 sigma^2, 0) / h^2) and d2 the mean
  squared difference of the `patch` x `patch` neighbourhoods of p and q
  (uniform patch weights; p itself has weight 1). Exact, not approximated:
  the cost grows with search^2, so keep `search` small (<= 21). Borders
  reflect-101. `h` and `sigma` are in [0, 1] intensity units (array-like).

  `guide`: an image batch of the same shape on which d2 is measured instead
  of `x` (the values averaged are still those of `x`). With a first NLM
  estimate as the guide this is the two-pass scheme of `nl_means_2pass`.
  """
  if patch < 1 or patch % 2 == 0 or search < 1 or search % 2 == 0:
    raise ValueError(f"nl_means: patch and search must be odd and >= 1, got {patch}, {search}")
  x = _as_batch(x, "nl_means")
  g = x if guide is None else _as_batch(guide, "nl_means guide")
  if g.shape != x.shape:
    raise ValueError(f"nl_means: guide shape {g.shape} differs from the images' {x.shape}")
  bad = _bad(x) | _bad(g)
  b, hh, ww = x.shape
  rp, rs = patch // 2, search // 2
  pad = rp + rs
  xp = _pad(x, rs, rs, "reflect")
  gp = _pad(g, pad, pad, "reflect")
  centre = gp[:, rs:rs + hh + 2 * rp, rs:rs + ww + 2 * rp]
  inv_h2 = 1.0 / jnp.square(jnp.asarray(h, jnp.float32))
  two_s2 = 2.0 * jnp.square(jnp.asarray(sigma, jnp.float32))
  box = np.ones(patch, np.float32) / patch
  offsets = jnp.asarray([(i, j) for i in range(search) for j in range(search)], jnp.int32)

  def body(carry, off):
    num, den = carry
    other = jax.lax.dynamic_slice(gp, (0, off[0], off[1]), centre.shape)
    d2 = _sep_conv(jnp.square(other - centre), box, box, None)
    wt = jnp.exp(-jnp.maximum(d2 - two_s2, 0.0) * inv_h2)
    v = jax.lax.dynamic_slice(xp, (0, off[0], off[1]), x.shape)
    return (num + wt * v, den + wt), None

  zero = jnp.zeros_like(x)
  (num, den), _ = jax.lax.scan(body, (zero, zero), offsets)
  return _poison(bad, num / den)


def nl_means_2pass(x, h1=16 / 255, h2=0.035, patch: int = 7, search: int = 21) -> jax.Array:
  """Two-pass (iterated) non-local means: the second pass measures patch similarity
  on the first pass's estimate and averages the noisy input with those weights.

  Speckle is correlated over several pixels, so patch distances measured on
  the noisy image are themselves noisy; measured on a first estimate they
  select truly similar patches (the idea of Brox & Cremers 2007, and of the
  second stage of BM3D). `h1` is the first pass's `h`, `h2` the second's
  (smaller: the guide is smooth).
  """
  first = nl_means(x, h1, patch, search)
  return nl_means(x, h2, patch, search, guide=first)


def srad(x, q0=0.25, iterations: int = 50, dt=0.1, rho=0.0, eps: float = 1e-3) -> jax.Array:
  """Speckle reducing anisotropic diffusion (Yu & Acton 2002), explicit scheme.

  Per iteration n (time t = n dt), with 4-neighbour differences of I (edges
  replicated: the paper's Neumann boundary) and I clamped below at `eps`
  (the equations divide by I; the sector background is 0):

    q^2 = [ 1/2 (|grad_R I|^2 + |grad_L I|^2) / I^2 - 1/16 (lap I / I)^2 ]
          / [ 1 + 1/4 lap I / I ]^2                      (eq. 35, h = 1)
    q0(t) = q0 exp(-rho t)                                 (speckle scale)
    c = 1 / (1 + (q^2 - q0^2) / (q0^2 (1 + q0^2)))        (eq. 33), clipped to [0, 1]
    d = c[i+1,j] (I[i+1,j] - I) + c (I[i-1,j] - I) + c[i,j+1] (I[i,j+1] - I) + c (I[i,j-1] - I)
    I <- I + dt / 4 d                                      (eq. 58)

  Clipping c to [0, 1] keeps the scheme a convex combination (stable and
  within the input range) for dt <= 1.

  Args:
    q0: speckle coefficient of variation at t = 0 (array-like, scalar or (B,));
      `estimate_q0` measures it on a homogeneous region.
    iterations: number of explicit steps (static).
    dt: time step, 0 < dt <= 1 (array-like).
    rho: decay rate of q0 over diffusion time (array-like; 0 keeps it fixed).
    eps: floor of I in the ratios.
  """
  x = _as_batch(x, "srad")
  bad = _bad(x)
  q0 = jnp.broadcast_to(jnp.asarray(q0, jnp.float32), (x.shape[0],))[:, None, None]
  dt = jnp.asarray(dt, jnp.float32)
  rho = jnp.asarray(rho, jnp.float32)

  def step(n, img):
    p = jnp.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    ic = jnp.maximum(img, eps)
    dn = p[:, :-2, 1:-1] - img
    ds = p[:, 2:, 1:-1] - img
    dw = p[:, 1:-1, :-2] - img
    de = p[:, 1:-1, 2:] - img
    g2 = (dn * dn + ds * ds + dw * dw + de * de) / (ic * ic)
    lap = (dn + ds + dw + de) / ic
    q2 = (0.5 * g2 - lap * lap / 16.0) / jnp.maximum(jnp.square(1.0 + 0.25 * lap), 1e-12)
    q02 = jnp.square(q0 * jnp.exp(-rho * dt * n))
    c = jnp.clip(1.0 / (1.0 + (q2 - q02) / (q02 * (1.0 + q02))), 0.0, 1.0)
    cp = jnp.pad(c, ((0, 0), (0, 1), (0, 1)), mode="edge")
    d = cp[:, 1:, :-1] * ds + c * dn + cp[:, :-1, 1:] * de + c * dw
    return img + 0.25 * dt * d

  out = jax.lax.fori_loop(0, iterations, step, x)
  return _poison(bad, out)


def estimate_q0(x, mask) -> jax.Array:
  """Speckle scale q0 = std / mean over a homogeneous region (Yu & Acton 2002, eq. 36).

  `mask` (B, H, W) or (H, W) selects the region; returns (B,) (NaN for an
  empty region).
  """
  x = _as_batch(x, "estimate_q0")
  m = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
  n = m.sum(axis=(1, 2))
  mean = jnp.where(m, x, 0).sum(axis=(1, 2)) / n
  var = jnp.where(m, jnp.square(x - mean[:, None, None]), 0).sum(axis=(1, 2)) / n
  return jnp.sqrt(var) / mean
