// Output epilogue. Positions run over the padded-width grid (pitch wp); lane i of vector v
// holds position p = q0 + v*VL + i, valid iff p < qvalid and p % wp < ow. The valid lanes of
// one vector map to consecutive output elements (h*ow + c), so each vector is compacted and
// stored contiguously.
struct epi {
  float* out;          // output row of the tile's first filter, at element 0 of the segment
  size_t ldo;          // distance between filters in the output
  const float* bias;   // bias of the tile's first filter
  int flags;           // RT3D_ACCUMULATE | RT3D_RELU | RT3D_STREAM
  uint32_t mask[8];    // per vector: valid lanes
  int dst[8];          // per vector: output element of its first valid lane
  int cnt[8];          // per vector: number of valid lanes
};

KINLINE void epi_prepare(struct epi* e, int q0, int nv, int qvalid, int wp, int ow) {
  int c = q0 % wp, h = q0 / wp;
  for (int v = 0; v < nv; ++v) {
    const int p0 = q0 + v * VL;
    // Fast path (per lane below it cost 9% of a KGS temporal conv): the whole vector lies
    // in one row's valid part, or rows are unpadded (wp == ow: consecutive positions are
    // consecutive outputs).
    if (p0 + VL <= qvalid && (c + VL <= ow || wp == ow)) {
      e->mask[v] = (1u << VL) - 1u;
      e->dst[v] = h * ow + c;
      e->cnt[v] = VL;
      c += VL;
      while (c >= wp) { c -= wp; ++h; }
      continue;
    }
    uint32_t m = 0;
    int cnt = 0, dst = -1;
    for (int i = 0; i < VL; ++i) {
      int p = q0 + v * VL + i;
      if (p < qvalid && c < ow) {
        m |= 1u << i;
        if (dst < 0) dst = h * ow + c;
        ++cnt;
      }
      if (++c == wp) { c = 0; ++h; }
    }
    e->mask[v] = m;
    e->dst[v] = dst < 0 ? 0 : dst;
    e->cnt[v] = cnt;
  }
}

KINLINE vf relu_if(vf a, int flags) {
  if (flags & RT3D_RELU) {
    vi keep = (a > VZERO) | (a != a);  // all ones where positive or NaN (NaN stays, as in PyTorch)
    a = (vf)((vi)a & keep);
  }
  return a;
}

#if defined(__AVX512F__) && VL == 16
#include <immintrin.h>
KINLINE void store_vec(vf a, float* orow, const struct epi* e, int v) {
  if (e->mask[v] == 0xFFFFu) {  // whole vector valid: plain load and store, no compress
    float* d = orow + e->dst[v];
    __m512 c = (__m512)a;
    if (e->flags & RT3D_ACCUMULATE) c = _mm512_add_ps(c, _mm512_loadu_ps(d));
    _mm512_storeu_ps(d, (__m512)relu_if((vf)c, e->flags));
    return;
  }
  const __mmask16 m = (__mmask16)e->mask[v];
  const __mmask16 lo = (__mmask16)((1u << e->cnt[v]) - 1u);
  __m512 c = _mm512_maskz_compress_ps(m, (__m512)a);
  float* d = orow + e->dst[v];
  if (e->flags & RT3D_ACCUMULATE) c = _mm512_add_ps(c, _mm512_maskz_loadu_ps(lo, d));
  c = (__m512)relu_if((vf)c, e->flags);
  _mm512_mask_storeu_ps(d, lo, c);
}
#else
KINLINE void store_vec(vf a, float* orow, const struct epi* e, int v) {
  float* d = orow + e->dst[v];
  const uint32_t m = e->mask[v];
  if (m == (1u << VL) - 1u) {  // whole vector valid: one vector store
    if (e->flags & RT3D_ACCUMULATE) a = a + VLOAD(d);
    VSTORE(d, relu_if(a, e->flags));
    return;
  }
  float t[VL];
  *(vfu*)t = a;
  int o = 0;
  for (int i = 0; i < VL; ++i) {
    if (m >> i & 1u) {
      float s = (e->flags & RT3D_ACCUMULATE) ? d[o] + t[i] : t[i];
      if ((e->flags & RT3D_RELU) && s < 0.0f) s = 0.0f;
      d[o++] = s;
    }
  }
}
#endif
