// Portable oracle of RESIZE (resize.h): per output pixel, per channel, the contract's
// expression in plain scalar float.
#include <cassert>
#include <cstring>

#include "kernels/resize/resize.h"

namespace qbinfer {

void resize_rows__reference(const ResizeShape& s, const float* in, std::size_t y_begin,
                            std::size_t y_end, float* out) {
  assert(y_begin <= y_end && y_end <= s.out_height);
  const std::size_t c = s.channels;
  for (std::size_t oy = y_begin; oy < y_end; ++oy) {
    const ResizeTap ty = resize_axis(s.ratio_h, oy, s.in_height, s.bilinear, s.half_pixel);
    const float* row0 = in + ty.i0 * s.in_width * c;
    const float* row1 = in + ty.i1 * s.in_width * c;
    for (std::size_t ox = 0; ox < s.out_width; ++ox) {
      const ResizeTap tx = resize_axis(s.ratio_w, ox, s.in_width, s.bilinear, s.half_pixel);
      float* dst = out + (oy * s.out_width + ox) * c;
      const float* a = row0 + tx.i0 * c;
      const float* b = row0 + tx.i1 * c;
      const float* cc = row1 + tx.i0 * c;
      const float* e = row1 + tx.i1 * c;
      for (std::size_t k = 0; k < c; ++k) {
        // Separate statements: each product and sum rounds once (the contract's order).
        float top = a[k];
        float bot = cc[k];
        if (!tx.collapsed) {
          const float ta = a[k] * tx.l0, tb = b[k] * tx.l1;
          top = ta + tb;
          const float bc = cc[k] * tx.l0, be = e[k] * tx.l1;
          bot = bc + be;
        }
        float v = top;
        if (!ty.collapsed) {
          const float vt = top * ty.l0, vb = bot * ty.l1;
          v = vt + vb;
        }
        dst[k] = v;
      }
    }
  }
}

}  // namespace qbinfer
