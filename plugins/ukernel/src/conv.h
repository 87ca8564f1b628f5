// One pooled row of the fused pool: the ph conv rows at r (pitch ow) are reduced into the
// first, then its pw-wide windows go to orow (first frame of the window: stored; later
// frames: max with what is there). Vectorized (scalar, it cost C3D's first conv, KGS, a
// third of its time): columns in whole vectors, pairs (pw = 2) by max_pairs.
KINLINE void pool_row(float* restrict r, int ow, int ph, int pw, int width, int pow_, int first,
                      float* restrict orow) {
  for (int u = 1; u < ph; ++u) {
    const float* src = r + (size_t)u * (size_t)ow;
    int c = 0;
    for (; c + VL <= width; c += VL) VSTORE(r + c, vmax_nan(VLOAD(src + c), VLOAD(r + c)));
    for (; c < width; ++c) r[c] = max_nan(src[c], r[c]);
  }
  if (pw == 2) {
    max_pairs(r, orow, pow_, first);
    return;
  }
  for (int j = 0; j < pow_; ++j) {
    float m = r[j * pw];
    for (int v = 1; v < pw; ++v) m = max_nan(r[j * pw + v], m);
    orow[j] = first ? m : max_nan(m, orow[j]);
  }
}

// Group g's conv over positions [q_begin, q_end) of one segment xs (the position blocks in
// turn, every register tile of filters per block, sharing its input): the group's filter f
// goes to out_g + f * e->ldo. Returns the group's real filter count (the last group may be
// padded with zero filters).
KINLINE int conv_group(const float* restrict xs, int q_begin, int q_end, int wp, int ow,
                       const float* restrict wts, const int32_t* restrict offs, const float* restrict bias,
                       int n, int gm, int f_total, int g, int j0, int j1, float* out_g, struct epi* e) {
  const int32_t* og = offs + (size_t)g * (size_t)n + (size_t)j0;  // the group's columns j0 .. j1-1
  const int kept = j1 - j0;
  const float* wg = wts + ((size_t)g * (size_t)n + (size_t)j0) * (size_t)gm;
  int rows = f_total - g * gm;
  if (rows > gm) rows = gm;
  for (int q0 = q_begin; q0 < q_end; q0 += VL * NV_MAX) {
    const int left = (q_end - q0 + VL - 1) / VL;
    const int nv = left < NV_MAX ? left : NV_MAX;
    epi_prepare(e, q0, nv, q_end, wp, ow);
    for (int f0 = 0; f0 < rows; f0 += MR_MAX) {
      const int mr = rows - f0 < MR_MAX ? rows - f0 : MR_MAX;
      e->out = out_g + (size_t)f0 * e->ldo;
      e->bias = bias + g * gm + f0;
      tile_dispatch(xs + q0, wg + f0, gm, og, kept, e, mr, nv);
    }
  }
  return rows;
}

// Conv followed by a max pool whose window is its stride (no padding, floor): C3D's pools.
// One workgroup (x = tile of qt pooled rows, y = block of gpw groups, z = b*POD + pooled frame)
// computes, per group and per frame of the window, the qt*ph conv rows under its pooled rows
// into a stack buffer (bias and ReLU applied as usual), pools them over (ph, pw) into the
// output, and over the frames by taking the max with what is there: the conv output never
// goes to memory and the pool needs no dispatch of its own. The buffer holds POOL_SCRATCH
// floats (rt3d_kgs_abi.h): gm * qt * ph * ow at most, which the pass checks.

static void conv_pool_workgroup(
    const float* restrict x, const float* restrict wts, const int32_t* restrict offs,
    const float* restrict bias, float* restrict out, int n, int gm, int f_total, int od, int oh, int ow,
    int wp, int qt, int img_stride, int seg_stride, int flags, int gpw, int pd, int ph, int pw,
    size_t wg_x, size_t wg_y, size_t wg_z) {
  float scratch[POOL_SCRATCH];  // [gm][rows * ow]
  const int pod = od / pd, poh = oh / ph, pow_ = ow / pw;
  const size_t b = wg_z / (size_t)pod, pk = wg_z % (size_t)pod;
  const int pr0 = (int)wg_x * qt;
  int pr1 = pr0 + qt;
  if (pr1 > poh) pr1 = poh;
  const int rows = (pr1 - pr0) * ph;  // conv rows this workgroup computes
  const int span = rows * ow;         // buffer elements per filter
  const int qend = rows * wp;         // their positions on the padded-width grid
  const int width = pow_ * pw;        // columns the pool reads
  const int groups = (f_total + gm - 1) / gm;
  int g_end = ((int)wg_y + 1) * gpw;
  if (g_end > groups) g_end = groups;
  const size_t pplane = (size_t)poh * (size_t)pow_;
  struct epi e;
  e.ldo = (size_t)span;
  e.flags = flags & (RT3D_RELU | RT3D_STREAM);  // fresh values into the buffer, never accumulated
  for (int g = (int)wg_y * gpw; g < g_end; ++g) {
    for (int a = 0; a < pd; ++a) {
      const float* xs = x + b * (size_t)img_stride + (pk * (size_t)pd + (size_t)a) * (size_t)seg_stride +
                        (size_t)pr0 * (size_t)ph * (size_t)wp;
      const int kept = offs[(size_t)groups * (size_t)n + (size_t)g];
      const int mrows = conv_group(xs, 0, qend, wp, ow, wts, offs, bias, n, gm, f_total, g, 0, kept, scratch, &e);
      // Pool this frame, per filter and pooled row.
      for (int f = 0; f < mrows; ++f) {
        float* o = out + ((b * (size_t)f_total + (size_t)(g * gm + f)) * (size_t)pod + pk) * pplane +
                   (size_t)pr0 * (size_t)pow_;
        for (int i = 0; i < pr1 - pr0; ++i) {
          pool_row(scratch + (size_t)f * (size_t)span + (size_t)i * (size_t)ph * (size_t)ow, ow, ph, pw, width,
                   pow_, a == 0, o + (size_t)i * (size_t)pow_);
        }
      }
    }
  }
}

// Entry point called by the dispatch's shim (llvm.bareptr: each memref is a bare base
// pointer followed by its element offset). The output is the final NCDHW tensor. Its i32
// constants (RT3D_KERNEL_CONSTANTS, from ukernel_abi.py) are n, gm, f (filters), od, oh, ow,
// wp, qt, img and seg (input strides of an image and an output frame), flags, gpw, pd, ph, pw
// (fused pool window) and kdn (frame ranges).
__attribute__((visibility("default")))
void RT3D_KERNEL_SYMBOL(
    const float* restrict x, size_t x_offset,
    const float* restrict wts, size_t w_offset,
    const int32_t* restrict offs, size_t off_offset,
    const float* restrict bias, size_t bias_offset,
    float* restrict out, size_t out_offset,
    RT3D_KERNEL_CONSTANTS, size_t wg_x, size_t wg_y, size_t wg_z) {
  x += x_offset;
  wts += w_offset;
  offs += off_offset;
  bias += bias_offset;
  out += out_offset;
  if (pd * ph * pw > 1) {  // (never with frame ranges)
    conv_pool_workgroup(x, wts, offs, bias, out, n, gm, f, od, oh, ow, wp, qt, img, seg, flags, gpw, pd, ph, pw,
                        wg_x, wg_y, wg_z);
    return;
  }
  const size_t b = wg_z / (size_t)od, k = wg_z % (size_t)od;
  const int qvalid = oh * wp;
  const int q_begin = (int)wg_x * qt;
  int q_end = q_begin + qt;
  if (q_end > qvalid) q_end = qvalid;
  const float* xs = x + b * (size_t)img + k * (size_t)seg;
  const size_t plane = (size_t)oh * (size_t)ow;
  // Groups keep different numbers of columns; the tables are padded to the largest (n), and
  // the count each group really keeps follows them: offs[G * n + g].
  const int groups = (f + gm - 1) / gm;
  // A workgroup computes gpw groups in turn over its positions: with small weights and a
  // large input (early layers, temporal 3x1x1 convs) the tile's input stays in cache for all.
  int g_end = ((int)wg_y + 1) * gpw;
  if (g_end > groups) g_end = groups;
  struct epi e;
  e.ldo = (size_t)od * plane;
  e.flags = flags;
  // Frame ranges (kdn > 0): the input is not padded in depth; each group's columns are sorted
  // by kernel frame, kd_start[g][kd] is the first column of frame kd, and this output frame
  // reads the kernel frames [lo, hi) that fall inside the input (tables after the counts).
  const int32_t* kd_start = offs + (size_t)groups * (size_t)(n + 1);
  int lo = 0, hi = 0;
  if (kdn > 0) {
    const int32_t* range = kd_start + (size_t)groups * (size_t)(kdn + 1) + 2 * k;
    lo = range[0];
    hi = range[1];
  }
  for (int g = (int)wg_y * gpw; g < g_end; ++g) {
    float* out_g = out + ((b * (size_t)f + (size_t)(g * gm)) * (size_t)od + k) * plane;
    int j0 = 0, j1 = offs[(size_t)groups * (size_t)n + (size_t)g];
    if (kdn > 0) {
      j0 = kd_start[(size_t)g * (size_t)(kdn + 1) + (size_t)lo];
      j1 = kd_start[(size_t)g * (size_t)(kdn + 1) + (size_t)hi];
    }
    conv_group(xs, q_begin, q_end, wp, ow, wts, offs, bias, n, gm, f, g, j0, j1, out_g, &e);
  }
}
