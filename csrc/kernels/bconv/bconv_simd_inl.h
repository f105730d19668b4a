// The register-tiled binary conv, written once over an ISA traits struct `S` and compiled once
// per ISA: bconv_<isa>.cc includes this file, then defines S (vector type, bit ops, counter)
// and instantiates BConv<S>. Everything here has internal linkage (anonymous namespace), so the
// copies compiled with different -m flags are never merged by the linker.
//
// Tile. One vector holds the weights of several output channels ("a group") for one chunk of
// input bits: 16-bit lanes (2 * S::kLanes channels per vector, 16 input bits each) or 32-bit
// lanes (S::kLanes channels, 32 bits each). The matching chunk of an input pixel is broadcast
// to every lane as a 32-bit memory operand (free on AVX-512) and XORed with the weight vector,
// so one XOR serves a whole group and each lane's popcount belongs to one output channel.
// Per (pixel, group) a stream of V = taps * chunks XORed vectors is counted by S::Counter
// (Harley-Seal carry-save adders into bit planes, or VPOPCNTD); then dot = K - 2 * count and
// out = float(dot) * scale + bias. S::kPixels pixels are counted together, sharing each
// weight load. 16-bit lanes halve the per-(pixel, channel) cost of flushing the planes, which
// dominates when a stream is short (1x1 over 512 channels is 32 vectors).
//
// Streams. For each output pixel the stream is gathered once ("im2col") into a stack buffer
// of 32-bit units and then counted against every group: kernel 3 copies its nine taps, with
// zeros for taps outside the image; 16-bit lanes replicate each 16-bit chunk into both halves
// of a 32-bit unit so that the broadcast stays 32-bit. A 1x1 with 32-bit lanes reads the input
// directly. Streams longer than kMaxPiece units are gathered and counted piece by piece.
// Kernel 3 with 16 < Ci <= 32 (one 32-bit chunk per tap) uses a fixed nine-input tree instead
// and keeps the nine weight vectors in registers (run_rows_small3x3 where the traits opt in,
// else run_group_small3x3); with Ci <= 16 two taps share each 32-bit lane
// (kPairSlot), five inputs instead of nine, from pair rows built once per output row.
//
// Borders. A tap outside the image is gathered as zero bits, i.e. a +1 pad: exact for one
// padding; for zero padding the pad's contribution wsum[tap] = Ci - 2 * popcount(w[o][tap]) is
// subtracted. Exact integer arithmetic either way.
//
// Packed blob (pack_weight), 64-byte aligned, for G groups of C = channels per vector:
//   weights  [G][tap][chunk] vectors. 32-bit lanes: lane i = channel gC + i, chunk j = bits
//            32j..32j+31 of the file row (one chunk when Ci <= 32). 16-bit lanes: lane 2i +
//            h = channel gC + h * S::kLanes + i (so the two halves of a 32-bit lane split into
//            two plain channel runs), chunk j = bits 16j..16j+15, 4 * words chunks. Lanes past
//            Co are 0.
//            Ci <= 16, kernel 3: [G][5] vectors of tap pairs (kPairSlot), 32-bit lanes.
//   wsum     (kernel 3 only) [G][tap][C] int32 in channel order.
//
// Overflow. |dot| <= 9 * Ci < 2^31 (checked by the callers). 32-bit lanes count in 32 bits and
// evaluate K - count - count modulo 2^32, exact whenever the true dot fits int32. 16-bit lanes
// are used only when k * k * Ci <= 65535, so a lane's count fits its 16 bits (as unsigned).
// Byte counters never exceed 255: see HsCounter.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

#include "kernels/bconv/bconv.h"

// The traits' primitives and the counting helpers must melt into the kernel loops: an
// out-of-line call clobbers every vector register (all are caller-saved), so one missed
// inlining decision costs a spill of the whole adder state.
#if defined(_MSC_VER) && !defined(__clang__)
#define QBINFER_INLINE __forceinline
#else
#define QBINFER_INLINE inline __attribute__((always_inline))
#endif
#if defined(__GNUC__) || defined(__clang__)
#define QBINFER_LAMBDA_INLINE __attribute__((always_inline))
#else
#define QBINFER_LAMBDA_INLINE
#endif

namespace qbinfer {
namespace {

// Bytes 4i..4i+3 of the nibble popcount table scaled by `weight`: byte n = weight *
// popcount(n), the table VPSHUFB looks nibbles up in.
constexpr int nibble_table_dword(int weight, int i) {
  unsigned v = 0;
  for (int b = 0; b < 4; ++b) {
    const int n = 4 * i + b;
    const int pc = (n & 1) + ((n >> 1) & 1) + ((n >> 2) & 1) + ((n >> 3) & 1);
    v |= static_cast<unsigned>(pc * weight) << (8 * b);
  }
  return static_cast<int>(v);
}

inline int popcount_words(const BitWord* w, std::size_t words) {
  int n = 0;
  for (std::size_t i = 0; i < words; ++i) {
#if defined(_MSC_VER) && !defined(__clang__)
    n += static_cast<int>(__popcnt64(w[i]));
#else
    n += __builtin_popcountll(w[i]);
#endif
  }
  return n;
}

// Stream units (32-bit) gathered per pixel at most at once (S::kPixels of them on the stack:
// 18 KiB for four): one piece covers a 3x3 over 2048 channels or a 1x1 over 18432 channels with
// 16-bit lanes. The zoo's longest streams are 128 units (1x1 over 2048) and 72 (3x3 over 128).
constexpr std::size_t kMaxPiece = 1152;

// Kernel 1 over at most this many channels runs the narrow path when the ISA's traits opt in
// (S::kNarrow1x1): each pixel's stream is 1-8 chunks, too short for Harley-Seal blocks
// (measured on AVX2: 28x28 256 -> 256 195 us against 264 us streamed).
constexpr std::size_t kNarrowMaxChannels = 256;

struct BConvPlan {
  bool narrow1x1;       // kernel 1, Ci <= kNarrowMaxChannels, the ISA opts in: 32-bit lanes
  bool pair3x3;         // kernel 3, Ci <= 16: two taps per 32-bit lane, five inputs
  bool small3x3;        // kernel 3, 16 < Ci <= 32: the nine-input tree
  int lane_bits;        // 16 or 32
  std::size_t lanes;    // S::kLanes (32-bit lanes per vector)
  std::size_t per_vec;  // output channels per vector
  std::size_t groups;
  std::size_t taps;
  std::size_t chunks;       // stream units per tap
  std::size_t stream;       // taps * chunks
  std::size_t wsum_offset;  // bytes from the blob start
  std::size_t bytes;        // whole blob, a multiple of 64
};

// The plan is a function of the shape and the ISA's constants only, so pack_weight and
// run_rows always agree. streamed_only: the gathered streams whatever Ci (the strided 3x3, whose
// output pixels are not a row of the input, has no pair or nine-tap tree path).
inline BConvPlan bconv_plan(const BConvShape& s, std::size_t lanes, bool has_16bit_lanes,
                            bool streamed_only = false, bool has_narrow1x1 = false) {
  BConvPlan p{};
  const std::size_t words = words_for_channels(s.in_channels);
  p.narrow1x1 = has_narrow1x1 && s.kernel == 1 && s.in_channels <= kNarrowMaxChannels;
  p.pair3x3 = !streamed_only && s.kernel == 3 && s.in_channels <= 16;
  p.small3x3 = !streamed_only && s.kernel == 3 && s.in_channels > 16 && s.in_channels <= 32;
  p.taps = s.kernel * s.kernel;
  p.lane_bits = has_16bit_lanes && !p.narrow1x1 && !p.pair3x3 && !p.small3x3 &&
                        s.out_channels > lanes && p.taps * s.in_channels <= 65535
                    ? 16
                    : 32;
  p.lanes = lanes;
  p.per_vec = p.lane_bits == 16 ? 2 * lanes : lanes;
  p.groups = (s.out_channels + p.per_vec - 1) / p.per_vec;
  if (p.lane_bits == 16) {
    p.chunks = 4 * words;
  } else {
    // The narrow path reads only the units that hold channels (Ci <= 96: no all-tail unit).
    p.chunks = p.narrow1x1 ? (s.in_channels + 31) / 32 : s.in_channels <= 32 ? 1 : 2 * words;
  }
  p.stream = p.pair3x3 ? 5 : p.taps * p.chunks;
  const std::size_t weight_bytes = p.groups * p.stream * lanes * 4;
  p.wsum_offset = (weight_bytes + 63) / 64 * 64;
  const std::size_t wsum_bytes = s.kernel == 3 ? p.groups * p.taps * p.per_vec * 4 : 0;
  p.bytes = std::max<std::size_t>(64, (p.wsum_offset + wsum_bytes + 63) / 64 * 64);
  return p;
}

// Ci <= 16: where tap t (= 3 * ky + kx) sits in the five pair vectors, as 2 * vector + half:
// vector 0 = taps (0, 1), 1 = (3, 4), 2 = (6, 7) (horizontal pairs of rows 0, 1, 2), 3 = (2, 5)
// (the vertical pair of column 2), 4 = (8, -).
constexpr unsigned kPairSlot[9] = {0, 1, 6, 2, 3, 7, 4, 5, 8};

inline void bconv_pack(const BConvShape& s, const BConvPlan& p, const BitWord* weight,
                       void* packed) {
  const std::size_t words = words_for_channels(s.in_channels);
  std::memset(packed, 0, p.bytes);
  auto* ws = reinterpret_cast<std::int32_t*>(static_cast<char*>(packed) + p.wsum_offset);
  for (std::size_t o = 0; o < s.out_channels; ++o) {
    const std::size_t g = o / p.per_vec, c = o % p.per_vec;
    for (std::size_t t = 0; t < p.taps; ++t) {
      const BitWord* row = weight + (o * p.taps + t) * words;
      const std::size_t vec0 = (g * p.taps + t) * p.chunks;
      if (p.pair3x3) {
        // Tap t's 16 bits go to vector kPairSlot[t] / 2, half kPairSlot[t] % 2.
        auto* wv = static_cast<std::uint32_t*>(packed);
        const auto bits = static_cast<std::uint32_t>(row[0] & 0xffff);
        wv[(g * 5 + kPairSlot[t] / 2) * p.lanes + c] |= bits << (16 * (kPairSlot[t] % 2));
      } else if (p.lane_bits == 16) {
        auto* wv = static_cast<std::uint16_t*>(packed);
        const std::size_t lane = 2 * (c % p.lanes) + c / p.lanes;
        for (std::size_t j = 0; j < p.chunks; ++j) {
          wv[(vec0 + j) * 2 * p.lanes + lane] =
              static_cast<std::uint16_t>(row[j / 4] >> (16 * (j % 4)));
        }
      } else {
        auto* wv = static_cast<std::uint32_t*>(packed);
        for (std::size_t j = 0; j < p.chunks; ++j) {
          wv[(vec0 + j) * p.lanes + c] = static_cast<std::uint32_t>(row[j / 2] >> (32 * (j % 2)));
        }
      }
      if (s.kernel == 3) {
        ws[(g * p.taps + t) * p.per_vec + c] =
            static_cast<std::int32_t>(s.in_channels) - 2 * popcount_words(row, words);
      }
    }
  }
}

// Harley-Seal over 2^Lg inputs, for N streams at once (N pixels sharing each weight load):
// adds them into planes[n][0..Lg-1] (plane i has weight 2^i) and leaves the carry of weight
// 2^Lg in carry[n]. Lg = 0 passes the input through. fetch(x) fills x[0..N-1].
template <class S, int Lg, int N, int P, class Fetch>
QBINFER_INLINE void harley_seal(typename S::V (&planes)[N][P], typename S::V (&carry)[N],
                                Fetch& fetch) {
  static_assert(Lg <= P, "a tree of 2^Lg inputs needs Lg planes");
  using V = typename S::V;
  if constexpr (Lg == 0) {
    fetch(carry);
  } else if constexpr (Lg == 1) {
    V a[N], b[N];
    fetch(a);
    fetch(b);
    for (int n = 0; n < N; ++n) S::csa(planes[n][0], a[n], b[n], planes[n][0], carry[n]);
  } else {
    V c1[N], c2[N];
    harley_seal<S, Lg - 1, N, P>(planes, c1, fetch);
    harley_seal<S, Lg - 1, N, P>(planes, c2, fetch);
    for (int n = 0; n < N; ++n)
      S::csa(planes[n][Lg - 1], c1[n], c2[n], planes[n][Lg - 1], carry[n]);
  }
}

// Per-lane popcounts of N streams by Harley-Seal: blocks of 2^Lg vectors go through the
// adders into Lg planes; the carry out of each block is counted right away into bytes
// (<= 8 per byte per block, widened into the lanes every 31 blocks). A stream's remainder
// (< 2^Lg vectors) goes through smaller trees (16, 8, 4, 2, 1) whose carries are counted with
// their exact weights into `misc` (<= 8 * (2^Lg - 1) per byte). At the end the planes' weighted
// counts add up to <= 8 * (2^Lg - 1) per byte as well: with Lg <= 4 misc and planes share one
// byte (<= 240) and one widening, with Lg = 5 each is widened on its own (<= 248 each).
// LB: lane bits (16 or 32) of the totals.
//
// Lg trades the per-block carry count (one table count per 2^Lg vectors) against the planes to
// count at the end: 32-vector blocks pay off on streams of 128 vectors and more (1x1 over 2048
// channels), 16-vector blocks on shorter ones (measured on Cascade Lake, alternating builds:
// 7x7 2048->2048 1x1 366 -> 319 us with Lg = 5; 28x28 128->128 3x3, a 72-vector stream,
// 277 -> 283 us; 14x14 512->512 1x1, 32 vectors, 7% slower).
template <class S, int N, int LB, int Lg = S::kMaxLg>
struct HsCounter {
  using V = typename S::V;
  static constexpr int kLg = Lg;
  static_assert(Lg >= 1 && Lg <= 5, "byte counters hold at most 8 * 31 per block of weights");
  V planes[N][Lg];
  V carries[N];
  V misc[N];
  V acc[N];
  int blocks = 0;
  bool misc_used = false;

  QBINFER_INLINE HsCounter() {
    for (int n = 0; n < N; ++n) {
      for (V& p : planes[n]) p = S::zero();
      carries[n] = misc[n] = acc[n] = S::zero();
    }
  }
  static QBINFER_INLINE V widen(V bytes, int weight) {
    return LB == 16 ? S::widen16(bytes, weight) : S::widen32(bytes, weight);
  }
  static QBINFER_INLINE V add(V a, V b) { return LB == 16 ? S::add16(a, b) : S::add32(a, b); }

  template <int RLg, class Fetch>
  QBINFER_INLINE void remainder_block(Fetch& fetch) {
    V carry[N];
    harley_seal<S, RLg, N, kLg>(planes, carry, fetch);
    for (int n = 0; n < N; ++n) misc[n] = S::add8(misc[n], S::byte_count(carry[n], 1 << RLg));
  }

  // Adds the next `count` vectors of the streams.
  template <class Fetch>
  QBINFER_INLINE void add_stream(Fetch& fetch, std::size_t count) {
    if (misc_used) {  // a second piece: make room for its remainder
      for (int n = 0; n < N; ++n) {
        acc[n] = add(acc[n], widen(misc[n], 1));
        misc[n] = S::zero();
      }
      misc_used = false;
    }
    for (std::size_t b = count >> kLg; b > 0; --b) {
      V carry[N];
      harley_seal<S, kLg, N, kLg>(planes, carry, fetch);
      for (int n = 0; n < N; ++n) carries[n] = S::add8(carries[n], S::byte_count(carry[n], 1));
      if (++blocks == 31) {
        for (int n = 0; n < N; ++n) {
          acc[n] = add(acc[n], widen(carries[n], 1 << kLg));
          carries[n] = S::zero();
        }
        blocks = 0;
      }
    }
    const std::size_t r = count & ((std::size_t{1} << kLg) - 1);
    if constexpr (kLg > 4) {
      if (r & 16) remainder_block<4>(fetch);
    }
    if constexpr (kLg > 3) {
      if (r & 8) remainder_block<3>(fetch);
    }
    if constexpr (kLg > 2) {
      if (r & 4) remainder_block<2>(fetch);
    }
    if constexpr (kLg > 1) {
      if (r & 2) remainder_block<1>(fetch);
    }
    if (r & 1) remainder_block<0>(fetch);
    misc_used = r != 0;
  }

  QBINFER_INLINE void total(V (&count)[N]) const {
    for (int n = 0; n < N; ++n) {
      V bytes = kLg <= 4 ? misc[n] : S::zero();
      for (int i = 0; i < kLg; ++i) bytes = S::add8(bytes, S::byte_count(planes[n][i], 1 << i));
      V sum = add(acc[n], widen(bytes, 1));
      if constexpr (kLg > 4) sum = add(sum, widen(misc[n], 1));
      count[n] = add(sum, widen(carries[n], 1 << kLg));
    }
  }
};

// The five carry-save adders both 9-input counts start with: x0 + .. + x8 = ones + 2 * c4 +
// 2 * t1 + 4 * f1, per bit.
template <class S>
QBINFER_INLINE void csa9_planes(const typename S::V* x, typename S::V& ones, typename S::V& c4,
                                typename S::V& t1, typename S::V& f1) {
  typename S::V s1, c1, s2, c2, s3, c3;
  S::csa(x[0], x[1], x[2], s1, c1);
  S::csa(x[3], x[4], x[5], s2, c2);
  S::csa(x[6], x[7], x[8], s3, c3);
  S::csa(s1, s2, s3, ones, c4);
  S::csa(c1, c2, c3, t1, f1);
}

// Per-lane count of 9 inputs (the 3x3 tree for Ci <= 32): carry-save adders down to four bit
// planes of weights 1, 2, 4, 8 (a count <= 9), each counted with its weight into bytes
// (<= 8 * 15 per byte) and widened into 32-bit lanes.
template <class S>
QBINFER_INLINE typename S::V count9_tree(const typename S::V* x) {
  using V = typename S::V;
  V ones, c4, t1, f1;
  csa9_planes<S>(x, ones, c4, t1, f1);
  const V f2 = S::and_(t1, c4);
  V bytes = S::byte_count(ones, 1);
  bytes = S::add8(bytes, S::byte_count(S::xor_(t1, c4), 2));
  bytes = S::add8(bytes, S::byte_count(S::xor_(f1, f2), 4));
  bytes = S::add8(bytes, S::byte_count(S::and_(f1, f2), 8));
  return S::widen32(bytes, 1);
}

// Per-lane count of 5 inputs (the Ci <= 16 pair path): two carry-save adders and a half adder
// down to bit planes of weights 1, 2, 4 (a count <= 5 per bit), counted into bytes (<= 8 * 7).
template <class S>
QBINFER_INLINE typename S::V count5_tree(const typename S::V* x) {
  using V = typename S::V;
  V s1, c1, ones, c2;
  S::csa(x[0], x[1], x[2], s1, c1);
  S::csa(s1, x[3], x[4], ones, c2);
  V bytes = S::byte_count(ones, 1);
  bytes = S::add8(bytes, S::byte_count(S::xor_(c1, c2), 2));
  bytes = S::add8(bytes, S::byte_count(S::and_(c1, c2), 4));
  return S::widen32(bytes, 1);
}

// Per-lane count of 9 inputs as bytes, for the row kernel of Ci <= 32 (run_rows_small3x3):
// the tree of count9_tree without its last adder stage. Five carry-save adders leave planes
// ones (weight 1), c4 and t1 (weight 2) and f1 (weight 4): x0 + .. + x8 = (s1 + s2 + s3) +
// 2 * (c1 + c2 + c3) = (ones + 2 * c4) + 2 * (t1 + 2 * f1). Each plane is counted with its
// weight into bytes: at most 8 * (1 + 2 + 2 + 4) = 72 per byte, so no byte overflows and
// S::widen32 (pairs of bytes times a small factor into 16 bits) cannot saturate.
template <class S>
QBINFER_INLINE typename S::V count9_bytes(const typename S::V* x) {
  using V = typename S::V;
  V ones, c4, t1, f1;
  csa9_planes<S>(x, ones, c4, t1, f1);
  const V low = S::add8(S::byte_count(ones, 1), S::byte_count(c4, 2));
  const V high = S::add8(S::byte_count(t1, 2), S::byte_count(f1, 4));
  return S::add8(low, high);
}

// Whether the traits opt in to the row kernel for kernel 3 with 16 < Ci <= 32
// (static constexpr bool kSmall3x3Rows = true); traits without the member keep
// run_group_small3x3.
template <class S, class = void>
struct HasSmall3x3Rows : std::false_type {};
template <class S>
struct HasSmall3x3Rows<S, std::void_t<decltype(S::kSmall3x3Rows)>>
    : std::bool_constant<S::kSmall3x3Rows> {};

// Whether the traits opt in to the narrow 1x1 path (static constexpr bool kNarrow1x1 = true);
// traits without the member keep the streamed path for every 1x1.
template <class S, class = void>
struct HasNarrow1x1 : std::false_type {};
template <class S>
struct HasNarrow1x1<S, std::void_t<decltype(S::kNarrow1x1)>> : std::bool_constant<S::kNarrow1x1> {};

template <class S>
struct BConv {
  using V = typename S::V;
  static constexpr std::size_t kLanes = S::kLanes;
  static constexpr int kPixels = S::kPixels;

  // Streams of at least kLongStream vectors count with HsCounter's longer blocks
  // (S::kLongStreamLg, 0 = the traits have no such counter), shorter ones with S::Counter.
  static constexpr std::size_t kLongStream = 128;
  template <int N, int LB, bool Long>
  using CounterFor =
      std::conditional_t<Long, HsCounter<S, N, LB, (S::kLongStreamLg > 0 ? S::kLongStreamLg : 1)>,
                         typename S::template Counter<N, LB>>;

  static BConvPlan plan(const BConvShape& s) {
    return bconv_plan(s, kLanes, S::kHas16BitLanes, false, HasNarrow1x1<S>::value);
  }

  static std::size_t packed_weight_bytes(const BConvShape& s) { return plan(s).bytes; }

  static void pack_weight(const BConvShape& s, const BitWord* weight, void* packed) {
    bconv_pack(s, plan(s), weight, packed);
  }

  // Bit t set: tap t of output pixel (y, x) lies outside the image.
  static unsigned missing_taps(const BConvShape& s, std::size_t y, std::size_t x) {
    if (s.kernel == 1) return 0;
    unsigned m = 0;
    if (y == 0) m |= 0007;
    if (y + 1 == s.height) m |= 0700;
    if (x == 0) m |= 0111;
    if (x + 1 == s.width) m |= 0444;
    return m;
  }

  // Gathers stream units [i0, i1) of output pixel (y, x) into buf (i0, i1 multiples of 4).
  // Taps are walked in order (no division per tap: a 64-bit DIV costs tens of cycles).
  template <int LB>
  static void gather(const BConvShape& s, const BConvPlan& p, const BitWord* in, std::size_t y,
                     std::size_t x, std::size_t i0, std::size_t i1, std::uint32_t* buf) {
    const std::size_t words = words_for_channels(s.in_channels);
    const std::size_t pad = s.kernel / 2;
    std::size_t base = 0;  // stream index of the tap's first unit
    for (std::size_t ky = 0; ky < s.kernel; ++ky) {
      const std::size_t iy = y + ky;  // + pad
      for (std::size_t kx = 0; kx < s.kernel; ++kx, base += p.chunks) {
        if (base + p.chunks <= i0) continue;
        if (base >= i1) return;
        const std::size_t j = i0 > base ? i0 - base : 0;
        const std::size_t n = std::min(p.chunks, i1 - base) - j;
        std::uint32_t* dst = buf + (base + j - i0);
        const std::size_t ix = x + kx;  // + pad
        if (iy < pad || iy >= s.height + pad || ix < pad || ix >= s.width + pad) {
          std::memset(dst, 0, n * 4);
        } else {
          const BitWord* px = in + ((iy - pad) * s.width + (ix - pad)) * words;
          if constexpr (LB == 16) {
            S::replicate16(px + j / 4, n / 4, dst);
          } else {
            std::memcpy(dst, reinterpret_cast<const std::uint32_t*>(px) + j, n * 4);
          }
        }
      }
    }
  }

  // dot = K - 2 * count (- the zero-padding correction), then the epilogue for the channels
  // [o0, o0 + n) of one output pixel.
  static QBINFER_INLINE void finish(V k_total, V count, const V* corr, std::size_t o0,
                                    std::size_t n, const float* scale, const float* bias,
                                    float* out_px) {
    V dot = S::sub32(S::sub32(k_total, count), count);
    if (corr != nullptr) dot = S::sub32(dot, *corr);
    S::epilogue(dot, scale + o0, bias + o0, out_px + o0, n);
  }

  // Zero-padding correction of the kLanes channels whose wsum starts at wsum_tap0 (tap 0 of
  // their group) for the taps in `missing`: the sum of their wsum.
  static V correction(const std::int32_t* wsum_tap0, std::size_t tap_stride, unsigned missing) {
    V corr = S::zero();
    for (std::size_t t = 0; missing != 0; ++t, missing >>= 1) {
      if (missing & 1) corr = S::add32(corr, S::load(wsum_tap0 + t * tap_stride));
    }
    return corr;
  }

  // Output pixels px[0..N-1] (linear indices y * W + x, at (y[n], x[n])), all groups. For the
  // direct 1x1 path the pixels must be consecutive. LB: lane bits of the plan.
  template <int LB, int N, bool Long>
  static void run_pixels(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                         const std::uint32_t* weights, const std::int32_t* wsum, const float* scale,
                         const float* bias, const std::size_t* px, const std::size_t* y,
                         const std::size_t* x, std::uint32_t (*buf)[kMaxPiece], float* out) {
    const bool direct = LB == 32 && s.kernel == 1;  // the pixel's own words are the stream
    const bool one_piece = direct || p.stream <= kMaxPiece;
    const std::size_t pd = 2 * words_for_channels(s.in_channels);
    const std::size_t step = direct ? pd : kMaxPiece;
    const std::uint32_t* a0 =
        direct ? reinterpret_cast<const std::uint32_t*>(in) + px[0] * pd : buf[0];
    if (!direct && one_piece) {
      for (int n = 0; n < N; ++n) gather<LB>(s, p, in, y[n], x[n], 0, p.stream, buf[n]);
    }
    // Zero padding corrects the taps outside the image; one padding is what the zeros compute.
    unsigned missing[N];
    for (int n = 0; n < N; ++n) {
      missing[n] = s.padding == BinaryPadding::kZero ? missing_taps(s, y[n], x[n]) : 0;
    }
    const V k_total = S::set32(static_cast<std::int32_t>(
        static_cast<std::uint32_t>(p.taps) * static_cast<std::uint32_t>(s.in_channels)));
    const std::size_t co = s.out_channels;
    const std::size_t group_stride = p.stream * kLanes;
    for (std::size_t g = 0; g < p.groups; ++g) {
      const std::uint32_t* w = weights + g * group_stride;
      CounterFor<N, LB, Long> counter;
      for (std::size_t i0 = 0; i0 < p.stream; i0 += kMaxPiece) {
        const std::size_t i1 = one_piece ? p.stream : std::min(p.stream, i0 + kMaxPiece);
        if (!one_piece) {
          for (int n = 0; n < N; ++n) gather<LB>(s, p, in, y[n], x[n], i0, i1, buf[n]);
        }
        const std::uint32_t* a = a0;
        auto fetch = [&](V(&xv)[N]) QBINFER_LAMBDA_INLINE {
          const V wv = S::load(w);
          for (int n = 0; n < N; ++n) xv[n] = S::xor_bcast(wv, a + n * step);
          w += kLanes;
          ++a;
        };
        counter.add_stream(fetch, i1 - i0);
        if (one_piece) break;
      }
      V count[N];
      counter.total(count);
      const std::int32_t* wsum_g = wsum + g * p.taps * p.per_vec;
      for (int n = 0; n < N; ++n) {
        float* out_px = out + px[n] * co;
        if constexpr (LB == 16) {
          const std::size_t o0 = g * 2 * kLanes;
          const std::size_t o1 = o0 + kLanes;
          V corr;
          if (missing[n] != 0) corr = correction(wsum_g, p.per_vec, missing[n]);
          finish(k_total, S::low16(count[n]), missing[n] != 0 ? &corr : nullptr, o0,
                 std::min(kLanes, co - o0), scale, bias, out_px);
          if (o1 < co) {
            if (missing[n] != 0) corr = correction(wsum_g + kLanes, p.per_vec, missing[n]);
            finish(k_total, S::high16(count[n]), missing[n] != 0 ? &corr : nullptr, o1,
                   std::min(kLanes, co - o1), scale, bias, out_px);
          }
        } else {
          const std::size_t o0 = g * kLanes;
          V corr;
          if (missing[n] != 0) corr = correction(wsum_g, p.per_vec, missing[n]);
          finish(k_total, count[n], missing[n] != 0 ? &corr : nullptr, o0,
                 std::min(kLanes, co - o0), scale, bias, out_px);
        }
      }
    }
  }

  // The pixels of rows [y_begin, y_end) in order, kPixels at a time (a group may span rows).
  template <int LB, bool Long>
  static void run_rows_streamed(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                                const std::uint32_t* weights, const std::int32_t* wsum,
                                const float* scale, const float* bias, std::size_t y_begin,
                                std::size_t y_end, float* out) {
    alignas(64) std::uint32_t buf[kPixels][kMaxPiece];
    const std::size_t end = y_end * s.width;
    std::size_t px[kPixels], y[kPixels], x[kPixels];
    std::size_t cy = y_begin, cx = 0;
    for (std::size_t p0 = y_begin * s.width; p0 < end;) {
      const int n = static_cast<int>(std::min<std::size_t>(kPixels, end - p0));
      for (int i = 0; i < n; ++i) {
        px[i] = p0 + i;
        y[i] = cy;
        x[i] = cx;
        if (++cx == s.width) {
          cx = 0;
          ++cy;
        }
      }
      if (n == kPixels) {
        run_pixels<LB, kPixels, Long>(s, p, in, weights, wsum, scale, bias, px, y, x, buf, out);
      } else {
        for (int i = 0; i < n; ++i) {
          run_pixels<LB, 1, Long>(s, p, in, weights, wsum, scale, bias, px + i, y + i, x + i, buf,
                                  out);
        }
      }
      p0 += static_cast<std::size_t>(n);
    }
  }

  // Kernel 3 with Ci <= 32, one group, one row: nine taps of one 32-bit chunk each.
  static void run_group_small3x3(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                                 const std::uint32_t* weights, const std::int32_t* wsum,
                                 std::size_t g, const float* scale, const float* bias,
                                 std::size_t y, float* out) {
    static const std::uint32_t kZeroChunk = 0;
    const std::size_t H = s.height, W = s.width;
    const auto* act = reinterpret_cast<const std::uint32_t*>(in);
    const std::size_t pd = 2;  // Ci <= 32: one word per pixel
    const std::uint32_t* wg = weights + g * 9 * kLanes;
    V w[9];
    for (std::size_t t = 0; t < 9; ++t) w[t] = S::load(wg + t * kLanes);
    const V k_total = S::set32(static_cast<std::int32_t>(9 * s.in_channels));
    const std::size_t o0 = g * kLanes, n_out = std::min(kLanes, s.out_channels - o0);
    const std::int32_t* wsum_g = wsum + g * 9 * p.per_vec;
    const bool zero_pad = s.padding == BinaryPadding::kZero;
    float* out_row = out + y * W * s.out_channels;
    auto one_pixel = [&](std::size_t x, const std::uint32_t* const* a, unsigned missing)
                         QBINFER_LAMBDA_INLINE {
                           V x9[9];
                           for (std::size_t t = 0; t < 9; ++t) x9[t] = S::xor_bcast(w[t], a[t]);
                           V corr;
                           if (missing != 0) corr = correction(wsum_g, p.per_vec, missing);
                           finish(k_total, S::count9(x9), missing != 0 ? &corr : nullptr, o0, n_out,
                                  scale, bias, out_row + x * s.out_channels);
                         };
    // Border pixels: a tap outside the image reads a zero chunk (a +1 pad).
    auto border_pixel = [&](std::size_t x) {
      const unsigned missing = missing_taps(s, y, x);
      const std::uint32_t* a[9];
      for (std::size_t t = 0; t < 9; ++t) {
        a[t] =
            (missing >> t) & 1 ? &kZeroChunk : act + ((y + t / 3 - 1) * W + (x + t % 3 - 1)) * pd;
      }
      one_pixel(x, a, zero_pad ? missing : 0);
    };
    if (y == 0 || y + 1 == H || W < 3) {
      for (std::size_t x = 0; x < W; ++x) border_pixel(x);
      return;
    }
    border_pixel(0);
    // Interior: nine fixed offsets from the pixel, broadcast straight from memory.
    const std::size_t r = W * pd;
    for (std::size_t x = 1; x + 1 < W; ++x) {
      const std::uint32_t* c = act + (y * W + x) * pd;
      const std::uint32_t* a[9] = {c - r - pd, c - r,      c - r + pd, c - pd,    c,
                                   c + pd,     c + r - pd, c + r,      c + r + pd};
      one_pixel(x, a, 0);
    }
    border_pixel(W - 1);
  }

  // Kernel 3 with 16 < Ci <= 32 (p.small3x3) where the traits opt in (HasSmall3x3Rows): the
  // nine-tap tree of run_group_small3x3 with less work per (pixel, group), which is where
  // ReActNet-A's first block (112x112, 32 -> 32) spends its time:
  //   - the count stays in bytes until one widening that also doubles and negates it
  //     (S::widen32(bytes, -2) = -2 * count), so dot = K + that, one add;
  //   - four weighted planes straight from the adders (count9_bytes), no final half adder;
  //   - interior pixels walk a pointer, two at a time so that two independent trees overlap;
  //     the border handling, the zero-padding correction and the group's channel count are
  //     decided once per row and group, not per pixel.
  // Rows outer, groups inner: the three input rows stay in L1 across the groups.
  static QBINFER_INLINE void small3x3_pixel(const V* w, const std::uint32_t* const* a, V k_total,
                                            const V* corr, std::size_t o0, std::size_t n_out,
                                            const float* scale, const float* bias, float* out_px) {
    V x9[9];
    for (std::size_t t = 0; t < 9; ++t) x9[t] = S::xor_bcast(w[t], a[t]);
    V dot = S::add32(k_total, S::widen32(count9_bytes<S>(x9), -2));
    if (corr != nullptr) dot = S::sub32(dot, *corr);
    S::epilogue(dot, scale + o0, bias + o0, out_px + o0, n_out);
  }

  static void run_rows_small3x3(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                                const std::uint32_t* weights, const std::int32_t* wsum,
                                const float* scale, const float* bias, std::size_t y_begin,
                                std::size_t y_end, float* out) {
    static const std::uint32_t kZeroChunk = 0;
    const std::size_t H = s.height, W = s.width, co = s.out_channels;
    const auto* act = reinterpret_cast<const std::uint32_t*>(in);
    constexpr std::size_t pd = 2;  // Ci <= 32: one 64-bit word (two units) per pixel
    const V k_total = S::set32(static_cast<std::int32_t>(9 * s.in_channels));
    const bool zero_pad = s.padding == BinaryPadding::kZero;
    for (std::size_t y = y_begin; y < y_end; ++y) {
      float* out_row = out + y * W * co;
      const bool edge_row = y == 0 || y + 1 == H;
      for (std::size_t g = 0; g < p.groups; ++g) {
        const std::uint32_t* wg = weights + g * 9 * kLanes;
        V w[9];
        for (std::size_t t = 0; t < 9; ++t) w[t] = S::load(wg + t * kLanes);
        const std::size_t o0 = g * kLanes, n_out = std::min(kLanes, co - o0);
        const std::int32_t* wsum_g = wsum + g * 9 * p.per_vec;
        // A tap outside the image reads a zero chunk (a +1 pad), corrected for zero padding.
        auto border_pixel = [&](std::size_t x) {
          const unsigned missing = missing_taps(s, y, x);
          const std::uint32_t* a[9];
          for (std::size_t t = 0; t < 9; ++t) {
            a[t] = (missing >> t) & 1 ? &kZeroChunk
                                      : act + ((y + t / 3 - 1) * W + (x + t % 3 - 1)) * pd;
          }
          V corr;
          const bool corrected = zero_pad && missing != 0;
          if (corrected) corr = correction(wsum_g, p.per_vec, missing);
          small3x3_pixel(w, a, k_total, corrected ? &corr : nullptr, o0, n_out, scale, bias,
                         out_row + x * co);
        };
        if (edge_row || W < 3) {
          for (std::size_t x = 0; x < W; ++x) border_pixel(x);
          continue;
        }
        border_pixel(0);
        // Interior: the nine taps at fixed offsets from the centre pixel c.
        const std::size_t r = W * pd;
        const std::uint32_t* c = act + (y * W + 1) * pd;
        float* o = out_row + co;
        std::size_t x = 1;
        for (; x + 2 < W; x += 2, c += 2 * pd, o += 2 * co) {
          const std::uint32_t* a0[9] = {c - r - pd, c - r,      c - r + pd, c - pd,    c,
                                        c + pd,     c + r - pd, c + r,      c + r + pd};
          const std::uint32_t* a1[9] = {c - r, c - r + pd, c - r + 2 * pd, c, c + pd, c + 2 * pd,
                                        c + r, c + r + pd, c + r + 2 * pd};
          small3x3_pixel(w, a0, k_total, nullptr, o0, n_out, scale, bias, o);
          small3x3_pixel(w, a1, k_total, nullptr, o0, n_out, scale, bias, o + co);
        }
        if (x + 1 < W) {
          const std::uint32_t* a0[9] = {c - r - pd, c - r,      c - r + pd, c - pd,    c,
                                        c + pd,     c + r - pd, c + r,      c + r + pd};
          small3x3_pixel(w, a0, k_total, nullptr, o0, n_out, scale, bias, o);
        }
        border_pixel(W - 1);
      }
    }
  }

  // Kernel 3 with Ci <= 16: each input pixel's channels are its word's low 16 bits, so two
  // taps share a 32-bit lane (kPairSlot). Per output row the pair rows are built once in
  // tiles of kPairTile pixels, then every group runs over them with its five weight vectors
  // in registers. Outside the image the pairs hold zero bits (+1 pads, corrected as usual).
  static constexpr std::size_t kPairTile = 256;

  static void run_rows_pair3x3(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                               const std::uint32_t* weights, const std::int32_t* wsum,
                               const float* scale, const float* bias, std::size_t y_begin,
                               std::size_t y_end, float* out) {
    const std::size_t H = s.height, W = s.width, co = s.out_channels;
    // rows[k][i]: the 16 bits of pixel (y - 1 + k, x0 - 1 + i), 0 outside the image.
    // pairs[j][i] for output column x = x0 + i: j = 0..2: (row y-1+j, columns x-1, x);
    // 3: (rows y-1, y, column x+1); 4: (row y+1, column x+1). Plain loops: vectorized.
    alignas(64) std::uint32_t rows[3][kPairTile + 2];
    alignas(64) std::uint32_t pairs[5][kPairTile];
    const V k_total = S::set32(static_cast<std::int32_t>(9 * s.in_channels));
    const bool zero_pad = s.padding == BinaryPadding::kZero;
    for (std::size_t y = y_begin; y < y_end; ++y) {
      for (std::size_t x0 = 0; x0 < W; x0 += kPairTile) {
        const std::size_t n = std::min(kPairTile, W - x0);
        for (std::size_t k = 0; k < 3; ++k) {
          std::uint32_t* r = rows[k];
          if (y + k < 1 || y + k > H) {  // row y - 1 + k outside the image
            std::memset(r, 0, (n + 2) * 4);
            continue;
          }
          const BitWord* src = in + (y + k - 1) * W + x0;  // column x0
          r[0] = x0 > 0 ? static_cast<std::uint32_t>(src[-1] & 0xffff) : 0;
          for (std::size_t i = 0; i < n; ++i)
            r[i + 1] = static_cast<std::uint32_t>(src[i] & 0xffff);
          r[n + 1] = x0 + n < W ? static_cast<std::uint32_t>(src[n] & 0xffff) : 0;
        }
        for (std::size_t k = 0; k < 3; ++k) {
          for (std::size_t i = 0; i < n; ++i) pairs[k][i] = rows[k][i] | rows[k][i + 1] << 16;
        }
        for (std::size_t i = 0; i < n; ++i) pairs[3][i] = rows[0][i + 2] | rows[1][i + 2] << 16;
        for (std::size_t i = 0; i < n; ++i) pairs[4][i] = rows[2][i + 2];
        for (std::size_t g = 0; g < p.groups; ++g) {
          const std::uint32_t* wg = weights + g * 5 * kLanes;
          V w[5];
          for (std::size_t j = 0; j < 5; ++j) w[j] = S::load(wg + j * kLanes);
          const std::size_t o0 = g * kLanes, n_out = std::min(kLanes, co - o0);
          const std::int32_t* wsum_g = wsum + g * 9 * p.per_vec;
          for (std::size_t i = 0; i < n; ++i) {
            V x5[5];
            for (std::size_t j = 0; j < 5; ++j) x5[j] = S::xor_bcast(w[j], &pairs[j][i]);
            const unsigned missing = zero_pad ? missing_taps(s, y, x0 + i) : 0;
            V corr;
            if (missing != 0) corr = correction(wsum_g, p.per_vec, missing);
            finish(k_total, S::count5(x5), missing != 0 ? &corr : nullptr, o0, n_out, scale, bias,
                   out + (y * W + x0 + i) * co);
          }
        }
      }
    }
  }

  // The streamed kernels with the plan's lane width and the counter of the stream's length.
  template <bool Long>
  static void run_streamed(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                           const std::uint32_t* weights, const std::int32_t* wsum,
                           const float* scale, const float* bias, std::size_t y_begin,
                           std::size_t y_end, float* out) {
    if (p.lane_bits == 16) {
      if constexpr (S::kHas16BitLanes) {
        run_rows_streamed<16, Long>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
      }
    } else {
      run_rows_streamed<32, Long>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    }
  }

  // ---- 1x1 over at most kNarrowMaxChannels channels (p.narrow1x1) ----
  // A pixel's whole stream is Chunks = ceil(Ci / 32) 32-bit units (Ci <= 32: one; the rest of
  // its word is the zero tail). NG groups' weight vectors stay in registers while the pixels stream
  // past: per (pixel, group) Chunks XORs against the broadcast units, the nibble-table count of
  // each into bytes (<= 8 * Chunks per byte), one widening into the 32-bit lanes, then dot = Ci - 2
  // * count and the epilogue. No Harley-Seal blocks and no gather: for streams this short their
  // set-up and flush cost more than the count (the streamed path ran ReActNet-A's 112x112
  // 32 -> 32 1x1 at 27 G binary MACs/s).
  template <int NG, int Chunks>
  static void run_narrow_groups(const BConvShape& s, const std::uint32_t* act, std::size_t pd,
                                const std::uint32_t* weights, std::size_t g0, const float* scale,
                                const float* bias, std::size_t p_begin, std::size_t p_end,
                                float* out) {
    const std::size_t co = s.out_channels;
    V w[NG][Chunks];
    for (int j = 0; j < NG; ++j) {
      for (int c = 0; c < Chunks; ++c)
        w[j][c] = S::load(weights + ((g0 + j) * Chunks + c) * kLanes);
    }
    const V k_total = S::set32(static_cast<std::int32_t>(s.in_channels));
    std::size_t n_out[NG];
    for (int j = 0; j < NG; ++j) n_out[j] = std::min(kLanes, co - (g0 + j) * kLanes);
    for (std::size_t px = p_begin; px < p_end; ++px) {
      const std::uint32_t* a = act + px * pd;
      float* out_px = out + px * co;
      for (int j = 0; j < NG; ++j) {
        V bytes = S::byte_count(S::xor_bcast(w[j][0], a), 1);
        for (int c = 1; c < Chunks; ++c) {
          bytes = S::add8(bytes, S::byte_count(S::xor_bcast(w[j][c], a + c), 1));
        }
        finish(k_total, S::widen32(bytes, 1), nullptr, (g0 + j) * kLanes, n_out[j], scale, bias,
               out_px);
      }
    }
  }

  template <int Chunks>
  static void run_rows_narrow1x1(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                                 const std::uint32_t* weights, const float* scale,
                                 const float* bias, std::size_t y_begin, std::size_t y_end,
                                 float* out) {
    // Registers: NG * Chunks weight vectors beside the count's temporaries and constants.
    constexpr int kBlock = Chunks <= 2 ? 4 : Chunks <= 4 ? 2 : 1;
    const auto* act = reinterpret_cast<const std::uint32_t*>(in);
    const std::size_t pd = 2 * words_for_channels(s.in_channels);
    const std::size_t p_begin = y_begin * s.width, p_end = y_end * s.width;
    std::size_t g0 = 0;
    for (; g0 + kBlock <= p.groups; g0 += kBlock) {
      run_narrow_groups<kBlock, Chunks>(s, act, pd, weights, g0, scale, bias, p_begin, p_end, out);
    }
    switch (p.groups - g0) {
      case 3:
        if constexpr (kBlock > 3) {
          run_narrow_groups<3, Chunks>(s, act, pd, weights, g0, scale, bias, p_begin, p_end, out);
        }
        break;
      case 2:
        if constexpr (kBlock > 2) {
          run_narrow_groups<2, Chunks>(s, act, pd, weights, g0, scale, bias, p_begin, p_end, out);
        }
        break;
      case 1:
        run_narrow_groups<1, Chunks>(s, act, pd, weights, g0, scale, bias, p_begin, p_end, out);
        break;
      default:
        break;
    }
  }

  static void run_narrow1x1(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                            const std::uint32_t* weights, const float* scale, const float* bias,
                            std::size_t y_begin, std::size_t y_end, float* out) {
    switch (p.chunks) {
      case 1:
        run_rows_narrow1x1<1>(s, p, in, weights, scale, bias, y_begin, y_end, out);
        break;
      case 2:
        run_rows_narrow1x1<2>(s, p, in, weights, scale, bias, y_begin, y_end, out);
        break;
      case 3:
        run_rows_narrow1x1<3>(s, p, in, weights, scale, bias, y_begin, y_end, out);
        break;
      case 4:
        run_rows_narrow1x1<4>(s, p, in, weights, scale, bias, y_begin, y_end, out);
        break;
      case 5:
        run_rows_narrow1x1<5>(s, p, in, weights, scale, bias, y_begin, y_end, out);
        break;
      case 6:
        run_rows_narrow1x1<6>(s, p, in, weights, scale, bias, y_begin, y_end, out);
        break;
      case 7:
        run_rows_narrow1x1<7>(s, p, in, weights, scale, bias, y_begin, y_end, out);
        break;
      default:
        run_rows_narrow1x1<8>(s, p, in, weights, scale, bias, y_begin, y_end, out);
        break;
    }
  }

  // ---- strided 3x3 with padding 1 (BCONV2D_GENERAL's fast path) ----
  // Output pixel (y, x) of a 3x3 conv with stride (sy, sx) and pads top/left 1 is pixel
  // (sy * y, sx * x) of the stride-1 'same' conv of the same input: the same stream, gathered
  // at that centre by gather(), the same border correction (missing_taps at the centre), only
  // written at y * out_width + x. Valid while every centre lies in the image (bottom and right
  // pads at most 1); the caller checks. The weights are packed with the streamed plan.
  static BConvPlan plan_streamed(const BConvShape& s) {
    return bconv_plan(s, kLanes, S::kHas16BitLanes, true);
  }

  template <int LB, bool Long>
  static void run_rows_strided_streamed(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                                        const std::uint32_t* weights, const std::int32_t* wsum,
                                        const float* scale, const float* bias, std::size_t sy,
                                        std::size_t sx, std::size_t out_width, std::size_t y_begin,
                                        std::size_t y_end, float* out) {
    alignas(64) std::uint32_t buf[kPixels][kMaxPiece];
    const std::size_t end = y_end * out_width;
    std::size_t px[kPixels], y[kPixels], x[kPixels];
    std::size_t oy = y_begin, ox = 0;
    for (std::size_t p0 = y_begin * out_width; p0 < end;) {
      const int n = static_cast<int>(std::min<std::size_t>(kPixels, end - p0));
      for (int i = 0; i < n; ++i) {
        px[i] = p0 + i;
        y[i] = oy * sy;
        x[i] = ox * sx;
        if (++ox == out_width) {
          ox = 0;
          ++oy;
        }
      }
      if (n == kPixels) {
        run_pixels<LB, kPixels, Long>(s, p, in, weights, wsum, scale, bias, px, y, x, buf, out);
      } else {
        for (int i = 0; i < n; ++i) {
          run_pixels<LB, 1, Long>(s, p, in, weights, wsum, scale, bias, px + i, y + i, x + i, buf,
                                  out);
        }
      }
      p0 += static_cast<std::size_t>(n);
    }
  }

  // s: the input image as a stride-1 3x3 shape; output rows [y_begin, y_end) of the
  // out_width-wide output.
  static void run_rows_strided3x3(const BConvShape& s, const void* packed, const BitWord* in,
                                  const float* scale, const float* bias, std::size_t sy,
                                  std::size_t sx, std::size_t out_width, std::size_t y_begin,
                                  std::size_t y_end, float* out) {
    assert(s.kernel == 3);
    assert(reinterpret_cast<std::uintptr_t>(packed) % 64 == 0);
    const BConvPlan p = plan_streamed(s);
    const auto* weights = static_cast<const std::uint32_t*>(packed);
    const auto* wsum =
        reinterpret_cast<const std::int32_t*>(static_cast<const char*>(packed) + p.wsum_offset);
    const bool long_stream = S::kLongStreamLg > 0 && p.stream >= kLongStream;
    if (long_stream) {
      if constexpr (S::kLongStreamLg > 0) {
        if (p.lane_bits == 16) {
          if constexpr (S::kHas16BitLanes) {
            run_rows_strided_streamed<16, true>(s, p, in, weights, wsum, scale, bias, sy, sx,
                                                out_width, y_begin, y_end, out);
          }
        } else {
          run_rows_strided_streamed<32, true>(s, p, in, weights, wsum, scale, bias, sy, sx,
                                              out_width, y_begin, y_end, out);
        }
      }
    } else if (p.lane_bits == 16) {
      if constexpr (S::kHas16BitLanes) {
        run_rows_strided_streamed<16, false>(s, p, in, weights, wsum, scale, bias, sy, sx,
                                             out_width, y_begin, y_end, out);
      }
    } else {
      run_rows_strided_streamed<32, false>(s, p, in, weights, wsum, scale, bias, sy, sx, out_width,
                                           y_begin, y_end, out);
    }
  }

  // ---- BCONV2D_GENERAL: 3x3 with pads top/left 1 (any stride) on the tiles above, the rest on
  // the reference (file layout, copied). The fast path needs every output pixel's centre tap in
  // the image, i.e. bottom and right pads of at most 1 (BConv::run_rows_strided3x3).
  static bool general_fast(const BConvGeneralShape& g) {
    return g.kernel_h == 3 && g.kernel_w == 3 && g.pad_top == 1 && g.pad_left == 1 &&
           g.stride_h * (g.out_height - 1) < g.height && g.stride_w * (g.out_width - 1) < g.width;
  }

  static BConvShape general_as_same3x3(const BConvGeneralShape& g) {
    return BConvShape{g.height, g.width, g.in_channels, g.out_channels, 3, g.padding};
  }

  static std::size_t general_file_bytes(const BConvGeneralShape& g) {
    return g.out_channels * g.kernel_h * g.kernel_w * words_for_channels(g.in_channels) *
           sizeof(BitWord);
  }

  static std::size_t general_packed_weight_bytes(const BConvGeneralShape& g) {
    if (general_fast(g)) return plan_streamed(general_as_same3x3(g)).bytes;
    return std::max<std::size_t>(64, (general_file_bytes(g) + 63) / 64 * 64);
  }

  static void general_pack_weight(const BConvGeneralShape& g, const BitWord* weight, void* packed) {
    if (general_fast(g)) {
      const BConvShape s = general_as_same3x3(g);
      bconv_pack(s, plan_streamed(s), weight, packed);
      return;
    }
    const std::size_t bytes = general_file_bytes(g);
    std::memcpy(packed, weight, bytes);
    std::memset(static_cast<char*>(packed) + bytes, 0, general_packed_weight_bytes(g) - bytes);
  }

  static void general_run_rows(const BConvGeneralShape& g, const BitWord* in, const void* packed,
                               const float* scale, const float* bias, std::size_t y_begin,
                               std::size_t y_end, float* out) {
    if (general_fast(g)) {
      run_rows_strided3x3(general_as_same3x3(g), packed, in, scale, bias, g.stride_h, g.stride_w,
                          g.out_width, y_begin, y_end, out);
      return;
    }
    bconv2d_general_rows__reference(g, in, static_cast<const BitWord*>(packed), scale, bias,
                                    y_begin, y_end, out);
  }

  static void run_rows(const BConvShape& s, const BitWord* in, const void* packed,
                       const float* scale, const float* bias, std::size_t y_begin,
                       std::size_t y_end, float* out) {
    assert(s.kernel == 1 || s.kernel == 3);
    assert(y_begin <= y_end && y_end <= s.height);
    assert(reinterpret_cast<std::uintptr_t>(packed) % 64 == 0);
    const BConvPlan p = plan(s);
    const auto* weights = static_cast<const std::uint32_t*>(packed);
    const auto* wsum =
        reinterpret_cast<const std::int32_t*>(static_cast<const char*>(packed) + p.wsum_offset);
    if (p.narrow1x1) {
      if constexpr (HasNarrow1x1<S>::value) {
        run_narrow1x1(s, p, in, weights, scale, bias, y_begin, y_end, out);
      }
    } else if (p.pair3x3) {
      run_rows_pair3x3(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    } else if (p.small3x3) {
      if constexpr (HasSmall3x3Rows<S>::value) {
        run_rows_small3x3(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
      } else {
        for (std::size_t g = 0; g < p.groups; ++g) {
          for (std::size_t y = y_begin; y < y_end; ++y) {
            run_group_small3x3(s, p, in, weights, wsum, g, scale, bias, y, out);
          }
        }
      }
    } else if (S::kLongStreamLg > 0 && p.stream >= kLongStream) {
      if constexpr (S::kLongStreamLg > 0) {
        run_streamed<true>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
      }
    } else {
      run_streamed<false>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    }
  }
};

}  // namespace
}  // namespace qbinfer
