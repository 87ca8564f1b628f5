// Zero padding of a conv's input, the layout the conv kernel reads: input [N, C, D, H, W] ->
// output [N, CP, DP, HP, WP], the input at (0, 0, dl, hl, wl), zeros elsewhere (CP > C: the
// extra channels the conv kernel's last vectors may read). IREE lowers a pad to a fill of the
// whole output and a strided copy, two passes over memory (R(2+1)D's 14-32 MB inputs: 8 ms);
// this writes every output element once. The pass uses it for large inputs only: on small
// ones IREE's pad costs less than a dispatch of its own.
// One workgroup (x = block of fpw output frames, y = plane b*CP + c) writes fpw frames in turn.
KINLINE void zero_floats(float* restrict o, int n) {
  int i = 0;
  for (; i + VL <= n; i += VL) VSTORE(o + i, VZERO);
  for (; i < n; ++i) o[i] = 0.0f;
}

// One frame: rows hl .. hl+h-1 hold the input rows from column wl on, zeros around them.
KINLINE void pad_frame(const float* restrict src, float* restrict o, int h, int w, int hp, int wp, int hl, int wl) {
  for (int i = 0; i < hp; ++i) {
    float* orow = o + (size_t)i * (size_t)wp;
    const int si = i - hl;
    if (si < 0 || si >= h) {
      zero_floats(orow, wp);
      continue;
    }
    const float* srow = src + (size_t)si * (size_t)w;
    zero_floats(orow, wl);
    float* dst = orow + wl;
    int j = 0;
    for (; j + VL <= w; j += VL) VSTORE(dst + j, VLOAD(srow + j));
    for (; j < w; ++j) dst[j] = srow[j];
    zero_floats(dst + w, wp - wl - w);
  }
}

__attribute__((visibility("default")))
void RT3D_PAD_SYMBOL(
    const float* restrict x, size_t x_offset, float* restrict out, size_t out_offset,
    RT3D_PAD_CONSTANTS, size_t wg_x, size_t wg_y, size_t wg_z) {
  (void)wg_z;
  x += x_offset;
  out += out_offset;
  const size_t b = wg_y / (size_t)cp, ch = wg_y % (size_t)cp;
  int k_end = ((int)wg_x + 1) * fpw;
  if (k_end > dp) k_end = dp;
  for (int k = (int)wg_x * fpw; k < k_end; ++k) {
    float* o = out + ((b * (size_t)cp + ch) * (size_t)dp + (size_t)k) * (size_t)hp * (size_t)wp;
    const int sk = k - dl;
    if (ch >= (size_t)c || sk < 0 || sk >= d) {
      zero_floats(o, hp * wp);
    } else {
      pad_frame(x + ((b * (size_t)c + ch) * (size_t)d + (size_t)sk) * (size_t)h * (size_t)w, o, h, w, hp, wp, hl,
                wl);
    }
  }
}
