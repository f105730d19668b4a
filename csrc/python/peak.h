// The machine's ceilings for the benchmarks (docs/benchmarks.md): how fast this core can
// XOR + popcount (the inner operation of a binary conv) and multiply-add floats, measured with
// tight register/L1-resident loops, one per ISA. Not used by the engine.
#pragma once

#include <cstddef>

namespace qbinfer {

// Binary MACs per second (bits XORed and counted) of a popcount loop over an L1-resident
// buffer, on the calling thread; `seconds` of measurement. isa: "scalar", "avx2", "avx512",
// "avx512_vpopcnt". Returns 0 for an ISA this build or CPU lacks.
double peak_binary_macs_per_s(const char* isa, double seconds);

// Float multiply-adds per second (1 FMA = 1 MAC = 2 FLOPs) of independent FMA chains.
double peak_float_macs_per_s(const char* isa, double seconds);

// Bytes per second one core reads from a buffer of `bytes` (rounded up to 256) read over and
// over: the bandwidth of the cache level (or DRAM) that a buffer of that size lives in. The
// loads are summed so that none can be dropped; "avx512" uses the AVX2 loop (256-bit loads
// already saturate every level past L1). Returns 0 for an ISA this build or CPU lacks.
double peak_read_bytes_per_s(const char* isa, std::size_t bytes, double seconds);

namespace peak_detail {
// Per-ISA read loops: `iterations` passes over buf[0, bytes), bytes a multiple of 256; return
// the bytes read.
double read_scalar(const void* buf, std::size_t bytes, std::size_t iterations);
double read_avx2(const void* buf, std::size_t bytes, std::size_t iterations);
// Per-ISA loops: run `iterations` passes, return the binary MACs / float MACs done.
double popcount_scalar(std::size_t iterations);
double popcount_avx2(std::size_t iterations);
double popcount_avx512(std::size_t iterations);
double popcount_avx512_vpopcnt(std::size_t iterations);
double fma_scalar(std::size_t iterations);
double fma_avx2(std::size_t iterations);
double fma_avx512(std::size_t iterations);
}  // namespace peak_detail

}  // namespace qbinfer
