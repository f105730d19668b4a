// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), identical to Python's zlib.crc32:
// crc32(b, crc32(a)) == crc32(a + b), crc32 of nothing is 0.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qbinfer {

std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t size);

}  // namespace qbinfer
