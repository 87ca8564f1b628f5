// 3-D max pooling (NCDHW). A padded pool reads its input unpadded: the padding (dl, hl, wl
// before; after, whatever the windows reach past the input) counts as -inf, so frames and
// rows outside are skipped and the columns outside start the row at -inf. (IREE padded with
// a fill of the whole tensor and a copy: S3D's 12 padded pools.) IREE's own lowering of the
// pooling generic ran at a quarter of memory speed on C3D's pools.
// One workgroup (x = output frame k, y = block of ppw planes b*C + c) computes one output frame
// of its planes (small planes: every output frame, pool_small_planes). Per output row, the
// kd x kh input rows are reduced column-wise into `row`, then the kw-wide, sw-strided
// windows along the row; both in whole vectors, row tails masked (windows of strides other
// than 1 and 2 per element). S3D's 3x3x3 and 1x3x3 pools, per element: 3.3 ms, a fifth of its
// KGS time.
// Rows span POOL_ROW_MAX input columns and have POOL_PAD_MAX padding before them at most
// (rt3d_kgs_abi.h; the pass checks; the padding is whole vectors).

// The first n (< VL) lanes at p, `rest` in the others, and the store of the first n lanes:
// row tails without touching memory past the row (AVX-512: masked; S3D's 14- and 7-wide pooled
// rows are all tail).
#if defined(__AVX512F__) && VL == 16
KINLINE vf vload_n(const float* p, int n, vf rest) {
  return (vf)_mm512_mask_loadu_ps((__m512)rest, (__mmask16)((1u << n) - 1u), p);
}
KINLINE void vstore_n(float* p, vf v, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), (__m512)v); }
#else
KINLINE vf vload_n(const float* p, int n, vf rest) {
  float t[VL];
  *(vfu*)t = rest;
  for (int i = 0; i < n; ++i) t[i] = p[i];
  return *(vfu*)t;
}
KINLINE void vstore_n(float* p, vf v, int n) {
  float t[VL];
  *(vfu*)t = v;
  for (int i = 0; i < n; ++i) p[i] = t[i];
}
#endif

// o[j] = max_e row[j * sw + e] over e < kw, in whole vectors for strides 1 (shifted loads)
// and 2 (even lanes of shifted pairs). The loads run up to 2 * VL past the row's span (the
// caller's slack); those lanes only feed the outputs past ow, which are not stored.
KINLINE void pool_windows(const float* restrict row, float* restrict o, int ow, int kw, int sw) {
  if (sw == 1 || sw == 2) {
    for (int j = 0; j < ow; j += VL) {
      const float* r = row + j * sw;
      vf m = sw == 1 ? VLOAD(r) : VEVEN(VLOAD(r), VLOAD(r + VL));
      for (int e = 1; e < kw; ++e) m = vmax_nan(sw == 1 ? VLOAD(r + e) : VEVEN(VLOAD(r + e), VLOAD(r + e + VL)), m);
      if (j + VL <= ow) {
        VSTORE(o + j, m);
      } else {
        vstore_n(o + j, m, ow - j);
      }
    }
    return;
  }
  for (int j = 0; j < ow; ++j) {
    float m = row[j * sw];
    for (int e = 1; e < kw; ++e) m = max_nan(row[j * sw + e], m);
    o[j] = m;
  }
}

// Small planes pooled at stride 1 in H and W into planes of the input's size (S3D's 3x3x3
// branch pools on 14x14, 7x7 and 4x4 maps, whose rows are shorter than a vector: per row they
// ran at a sixth of memory speed). Separable over the flat plane in whole vectors: each input
// frame's kh x kw maxima once, for every output frame that reads it (the workgroup does all
// output frames of its planes); lanes whose neighbour lies outside the plane read -inf.
// Its buffer holds POOL_SMALL_MAX floats (d * h * w), its windows POOL_SMALL_TAPS rows and
// columns at most (rt3d_kgs_abi.h; pool_small in the pass makes the same test).

KINLINE int pool_small(int d, int h, int w, int oh, int ow, int kh, int kw, int sh, int sw) {
  return sh == 1 && sw == 1 && oh == h && ow == w && d * h * w <= POOL_SMALL_MAX && kh <= POOL_SMALL_TAPS &&
         kw <= POOL_SMALL_TAPS;
}

// Bit i of mask[t][blk]: lane i of flat block blk (element e = blk * VL + i < n) has its tap t
// (row + t + shift if rows, else column + t + shift) inside the h x w plane. Computed once per
// workgroup: per vector and tap it cost more than the maxima.
static void plane_masks(uint16_t* mask, int n, int h, int w, int k, int shift, int rows) {
  const int nb = (n + VL - 1) / VL;
  for (int i = 0; i < k * nb; ++i) mask[i] = 0;
  int r = 0, c = 0;  // row and column of element e (no division per element: it cost more than the pool)
  for (int e = 0; e < n; ++e) {
    for (int t = 0; t < k; ++t) {
      const int v = (rows ? r : c) + t + shift;
      if (v >= 0 && v < (rows ? h : w)) mask[t * nb + e / VL] |= (uint16_t)(1u << (e % VL));
    }
    if (++c == w) {
      c = 0;
      ++r;
    }
  }
}

// o[i] = max over taps t < k (mask bit set) of src[i + (t + shift) * step]; lanes without a tap
// are -inf. Whole vectors: up to VL - 1 floats past n are written (the caller's slack).
KINLINE void plane_taps(const float* src, float* o, int n, const uint16_t* mask, int k, int step, int shift) {
  const int nb = (n + VL - 1) / VL;
  for (int blk = 0; blk < nb; ++blk) {
    const int i0 = blk * VL;
    vf m = VBCAST(-__builtin_inff());
    for (int t = 0; t < k; ++t) {
      const float* p = src + i0 + (t + shift) * step;
      const uint32_t mk = mask[t * nb + blk];
#if defined(__AVX512F__) && VL == 16
      m = vmax_nan((vf)_mm512_mask_loadu_ps(_mm512_set1_ps(-__builtin_inff()), (__mmask16)mk, p), m);
#else
      float tmp[VL];
      for (int i = 0; i < VL; ++i) tmp[i] = (mk >> i & 1u) ? p[i] : -__builtin_inff();
      m = vmax_nan(*(vfu*)tmp, m);
#endif
    }
    VSTORE(o + i0, m);
  }
}

// (Not inlined: its buffers in the entry's frame made the row path 20-50% slower.)
__attribute__((noinline)) static void pool_small_planes(
    const float* restrict x, float* restrict out, int d, int h, int w, int od, int kd, int kh, int kw, int sd,
    int dl, int hl, int wl, size_t p0, size_t p1) {
  float t[POOL_SMALL_MAX + VL] __attribute__((aligned(64)));
  float m2[POOL_SMALL_MAX + VL] __attribute__((aligned(64)));  // [d][h * w]: each frame's kh x kw maxima
  uint16_t mw[POOL_SMALL_TAPS * (POOL_SMALL_MAX / VL + 1)], mh[POOL_SMALL_TAPS * (POOL_SMALL_MAX / VL + 1)];
  const int hw = h * w;
  plane_masks(mw, hw, h, w, kw, -wl, 0);
  plane_masks(mh, hw, h, w, kh, -hl, 1);
  for (size_t p = p0; p < p1; ++p) {
    const float* xp = x + p * (size_t)d * (size_t)hw;
    for (int f = 0; f < d; ++f) {
      plane_taps(xp + (size_t)f * (size_t)hw, t, hw, mw, kw, 1, -wl);
      plane_taps(t, m2 + f * hw, hw, mh, kh, w, -hl);  // (its slack lands in frame f + 1, written next)
    }
    float* op = out + p * (size_t)od * (size_t)hw;
    for (int k = 0; k < od; ++k) {
      const int f0 = k * sd - dl, a0 = f0 < 0 ? -f0 : 0;
      float* o = op + (size_t)k * (size_t)hw;
      for (int i0 = 0; i0 < hw; i0 += VL) {
        vf m = VLOAD(m2 + (f0 + a0) * hw + i0);
        for (int a = a0 + 1; a < kd && f0 + a < d; ++a) m = vmax_nan(VLOAD(m2 + (f0 + a) * hw + i0), m);
        if (i0 + VL <= hw) {
          VSTORE(o + i0, m);
        } else {
          vstore_n(o + i0, m, hw - i0);
        }
      }
    }
  }
}

__attribute__((visibility("default")))
void RT3D_POOL_SYMBOL(
    const float* restrict x, size_t x_offset, float* restrict out, size_t out_offset,
    RT3D_POOL_CONSTANTS, size_t wg_x, size_t wg_y, size_t wg_z) {
  (void)wg_z;
  x += x_offset;
  out += out_offset;
  const size_t p_end = (wg_y + 1) * (size_t)ppw < (size_t)planes ? (wg_y + 1) * (size_t)ppw : (size_t)planes;
  if (pool_small(d, h, w, oh, ow, kh, kw, sh, sw)) {  // (one workgroup per block of planes: wg_x is 0)
    pool_small_planes(x, out, d, h, w, od, kd, kh, kw, sd, dl, hl, wl, wg_y * (size_t)ppw, p_end);
    return;
  }
  const size_t hw = (size_t)h * (size_t)w;
  const int span = (ow - 1) * sw + kw;  // columns of the (padded) row the windows read
  // Input column c goes to in[c] (vector-aligned, so the kd x kh passes store and reload whole
  // aligned vectors: misaligned ones made the pools 4x slower); padded column p is in[p - wl].
  // The wl columns before in[0] and those from the input row's end to the span are -inf.
  const int cols = span - wl < w ? span - wl : w;  // input columns the windows read
  const int cols_v = (cols + VL - 1) / VL * VL;    // whole vectors over them
  float row[POOL_PAD_MAX + POOL_ROW_MAX + 4 * VL] __attribute__((aligned(64)));  // slack: vectors past the span
  float* in = row + POOL_PAD_MAX;
  const vf ninf = VBCAST(-__builtin_inff());
  for (int c = 0; c < POOL_PAD_MAX; c += VL) VSTORE(row + c, ninf);  // the padding before
  for (int c = cols_v; c < span - wl; c += VL) VSTORE(in + c, ninf);  // after (the rows stop at cols_v)
  const int f0 = (int)wg_x * sd - dl;
  // ppw planes in turn (small frames: S3D's 7x7 pools ran at a sixth of memory speed with
  // one 49-element plane per workgroup).
  for (size_t p = wg_y * (size_t)ppw; p < p_end; ++p) {
    const float* xp = x + p * (size_t)d * hw;
    float* op = out + (p * (size_t)od + wg_x) * (size_t)oh * (size_t)ow;
    for (int r = 0; r < oh; ++r) {
      const int r0 = r * sh - hl;
      int first = 1;
      for (int a = f0 < 0 ? -f0 : 0; a < kd && f0 + a < d; ++a) {
        for (int b = r0 < 0 ? -r0 : 0; b < kh && r0 + b < h; ++b) {
          const float* src = xp + (size_t)(f0 + a) * hw + (size_t)(r0 + b) * (size_t)w;
          int c = 0;
          for (; c + VL <= cols; c += VL) {
            VSTORE(in + c, first ? VLOAD(src + c) : vmax_nan(VLOAD(src + c), VLOAD(in + c)));
          }
          if (c < cols) {  // tail: nothing past the input row read; its lanes past the row are -inf
            const vf t = vload_n(src + c, cols - c, ninf);
            VSTORE(in + c, first ? t : vmax_nan(t, VLOAD(in + c)));
          }
          first = 0;
        }
      }
      const float* padded = in - wl;
      float* o = op + (size_t)r * (size_t)ow;
      if (kw == 2 && sw == 2) {
        max_pairs(padded, o, ow, 1);
      } else {
        pool_windows(padded, o, ow, kw, sw);
      }
    }
  }
}
