// The ISA: lanes per vector (VL), the largest register tile (MR_MAX filters x NV_MAX vectors of
// output positions, bounded by the vector registers), vector types and the vector macros, in
// GCC/Clang vector extensions. Part of kgs_conv3d.c (not a standalone header).
//
//   AVX-512: 16 lanes, up to 8 filters x 3 vectors (24 zmm accumulators)
//   AVX2:     8 lanes, up to 6 filters x 2 vectors (12 ymm accumulators)
//   NEON:     4 lanes, up to 8 filters x 3 vectors (24 q accumulators)
//
// Literal sizes and lane lists (not computed from VL) keep the preprocessed kernel as it was.
// VEVEN / VODD: even / odd lanes of the 2*VL floats (lo, hi), the pools' pairs along a row.
#if defined(__AVX512F__)
#define VL 16
#define MR_MAX 8
#define NV_MAX 3
typedef float vf __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(64)));
#define VBCAST(s) ((vf){(s), (s), (s), (s), (s), (s), (s), (s), (s), (s), (s), (s), (s), (s), (s), (s)})
#define VEVEN(lo, hi) __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define VODD(lo, hi) __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#elif defined(__AVX2__)
#define VL 8
#define MR_MAX 6
#define NV_MAX 2
typedef float vf __attribute__((vector_size(32)));
typedef float vfu __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(32)));
#define VBCAST(s) ((vf){(s), (s), (s), (s), (s), (s), (s), (s)})
#define VEVEN(lo, hi) __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14)
#define VODD(lo, hi) __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15)
#elif defined(__aarch64__) || defined(__ARM_NEON)
#define VL 4
#define MR_MAX 8
#define NV_MAX 3
typedef float vf __attribute__((vector_size(16)));
typedef float vfu __attribute__((vector_size(16), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(16)));
#define VBCAST(s) ((vf){(s), (s), (s), (s)})
#define VEVEN(lo, hi) __builtin_shufflevector(lo, hi, 0, 2, 4, 6)
#define VODD(lo, hi) __builtin_shufflevector(lo, hi, 1, 3, 5, 7)
#else
#error "unsupported target: the microkernel needs AVX-512, AVX2 or NEON"
#endif

// The pass pads the input for vectors of RT3D_MAX_LANES lanes; the pools' lane masks are 16 bits.
#if VL > RT3D_MAX_LANES || VL > 16
#error "VL exceeds the lanes the pass pads the input for (RT3D_MAX_LANES)"
#endif

#define VZERO ((vf){0})
#define VLOAD(p) (*(const vfu*)(p))
#define VSTORE(p, v) (*(vfu*)(p) = (v))
#define VFMA(acc, a, b) ((acc) + (a) * (b))
