// GCC 12 reports the _mm512_undefined_* source inside many AVX-512 intrinsics as "(may be)
// used uninitialized" (GCC bug 105593, fixed in 13). Include this first in an AVX-512 file,
// before <immintrin.h>: the pragmas must precede the header to reach its inlined code, and they
// hold for the rest of that file only (each file is its own translation unit).
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
