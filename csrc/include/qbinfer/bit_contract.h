// The bit contract of qbinfer, written once. Every kernel, the converter and the
// .qbw file follow it; the Python tests encode it independently with numpy.
//
// Layout
//   Binary tensors (activations and weights) are NHWC with channels innermost, packed
//   along channels into 64-bit words (BitWord). Channel c of a pixel lives in word
//   c / 64, bit c % 64 (bit 0 = least significant). A pixel of C channels occupies
//   words_for_channels(C) consecutive words; pixels follow each other with no gap.
//   Words are little-endian in memory (so a byte view is np.packbits(...,
//   bitorder="little")); a big-endian build is refused below.
//
// Meaning
//   bit 1 = -1, bit 0 = +1. A value x with per-channel threshold t packs to 1 iff
//   NOT (x >= t). Consequences, all deliberate:
//     - x == t packs to +1, i.e. sign(0) = +1, as the paper's models use (never
//       torch.sign, which gives 0);
//     - -0.0 packs to +1, because IEEE says -0.0 >= 0.0;
//     - NaN packs to -1, matching PyTorch's where(x >= 0, 1, -1);
//     - a NaN threshold packs every value to -1.
//
// Tail bits
//   Bits of the last word for channels >= C are always 0. Weights are packed the same
//   way, so XOR of two packed rows is 0 in the tail and no kernel needs a mask:
//     dot(a, w) over C channels = C - 2 * popcount(a XOR w).
//
// Bounds
//   No kernel reads or writes past the last word of a pixel row it was given, nor
//   past the last float of its input. Tests allocate exactly
//   pixels * words_for_channels(C) words and nothing more.
//
// Why a threshold is exact
//   The models compute sign(x + gamma). In IEEE arithmetic with gradual underflow the
//   rounded sum of two floats is zero only when they are exact negatives of each
//   other, and otherwise keeps the sign of the exact sum. Hence
//   (x + gamma >= 0)  <=>  (x >= -gamma)  exactly, and folding the bias into a
//   threshold t = -gamma at conversion loses nothing. This holds only while FTZ/DAZ
//   are off: with flush-to-zero a tiny nonzero sum becomes 0 (+1) while the
//   comparison still sees its true sign. Never build with -ffast-math.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <limits>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qbinfer's packed layout and .qbw files assume a little-endian target"
#endif

namespace qbinfer {

using BitWord = std::uint64_t;

inline constexpr std::size_t kBitsPerWord = 64;

static_assert(sizeof(BitWord) * CHAR_BIT == kBitsPerWord, "BitWord must be 64 bits");
static_assert(std::numeric_limits<float>::is_iec559,
              "the threshold rule relies on IEEE-754 comparisons");

// Words needed for one pixel of `channels` channels.
constexpr std::size_t words_for_channels(std::size_t channels) {
  return (channels + kBitsPerWord - 1) / kBitsPerWord;
}

// The packing rule for one value, as a bit. Written as !(x >= t), not x < t, so that
// NaN on either side gives 1 (-1).
constexpr BitWord pack_bit(float x, float threshold) {
  return !(x >= threshold) ? BitWord{1} : BitWord{0};
}

}  // namespace qbinfer
