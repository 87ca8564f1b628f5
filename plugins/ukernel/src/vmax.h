KINLINE float max_nan(float a, float b) { return (a != a || a > b) ? a : b; }  // NaN wins, as in PyTorch

KINLINE vf vmax_nan(vf a, vf b) {  // max_nan per lane
  const vi m = (a != a) | (a > b);
  return (vf)(((vi)a & m) | ((vi)b & ~m));
}

// o[j] = max(r[2j], r[2j+1]) for j < count, maxed with o[j] itself unless first: 2-wide,
// stride-2 windows along a row, in whole vectors by even/odd lane shuffles.
KINLINE void max_pairs(const float* restrict r, float* restrict o, int count, int first) {
  int j = 0;
  for (; j + VL <= count; j += VL) {
    const vf lo = VLOAD(r + 2 * j), hi = VLOAD(r + 2 * j + VL);
    vf m = vmax_nan(VODD(lo, hi), VEVEN(lo, hi));
    if (!first) m = vmax_nan(m, VLOAD(o + j));
    VSTORE(o + j, m);
  }
  for (; j < count; ++j) {
    const float m = max_nan(r[2 * j + 1], r[2 * j]);
    o[j] = first ? m : max_nan(m, o[j]);
  }
}
