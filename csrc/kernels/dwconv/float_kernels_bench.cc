// Microbenchmark of the float / INT8 kernel families (depthwise, fused epilogue, stem conv, FC,
// pools) on every ISA this build and CPU run, over the depthwise layer shapes of one zoo model at
// 224x224 (csrc/tests/zoo_shapes.inc): QB-Net-Small (default), QSB-Net-Small ("qsb") or any model
// named as in weights_tools.zoo, one thread. Time is this thread's CPU time
// (CLOCK_THREAD_CPUTIME_ID), the best of many short trials, so that other processes on a shared
// machine perturb it as little as possible. Each run touches a whole layer's tensors (no fusion
// across ops), so large layers also measure the cache hierarchy.
// Not a test: build with -DQBINFER_BUILD_BENCHMARKS=ON and run qbinfer_float_bench [qsb|model].
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "kernels/conv2d/conv2d.h"
#include "kernels/dwconv/dwconv.h"
#include "kernels/epilogue/epilogue.h"
#include "kernels/fc/fc.h"
#include "kernels/pool/pool.h"
#include "qbinfer/isa.h"

using namespace qbinfer;  // NOLINT: a benchmark driver

double thread_us() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) * 1e-3;
}

// Best of repeated runs for about 0.2 s of CPU time (at least 5).
template <class F>
double time_us(F&& f) {
  f();
  double best = 1e300, spent = 0;
  for (int i = 0; i < 20000 && (i < 5 || spent < 2e5); ++i) {
    const double t0 = thread_us();
    f();
    const double t = thread_us() - t0;
    best = std::min(best, t);
    spent += t;
  }
  return best;
}

std::vector<float> rnd(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

struct Aligned {
  void* p;
  explicit Aligned(size_t n) : p(::operator new(std::max<size_t>(n, 64), std::align_val_t{64})) {}
  ~Aligned() { ::operator delete(p, std::align_val_t{64}); }
};

struct DW {
  size_t h, w, c, k, sh, sw;
  int count;
};

int main(int argc, char** argv) {
  std::string model = argc > 1 ? argv[1] : "qb_net_small";
  if (model == "qsb") model = "qsb_net_small";
  // The model's depthwise layers in order; a repeated layer counts once, with its repeats.
  std::vector<DW> dws;
  {
    struct Row {
      const char* model;
      size_t h, w, c, sh, sw, k;
    };
    const Row rows[] = {
#define QBINFER_ZOO_DWCONV(model, h, w, c, sh, sw, multiplier) {model, h, w, c, sh, sw, multiplier},
#include "tests/zoo_shapes.inc"
    };
    for (const Row& r : rows) {
      if (model != r.model) continue;
      bool seen = false;
      for (DW& d : dws) {
        if (d.h == r.h && d.w == r.w && d.c == r.c && d.k == r.k && d.sh == r.sh && d.sw == r.sw) {
          ++d.count;
          seen = true;
        }
      }
      if (!seen) dws.push_back({r.h, r.w, r.c, r.k, r.sh, r.sw, 1});
    }
  }
  if (dws.empty()) {
    std::fprintf(stderr, "no depthwise layers for model '%s' in tests/zoo_shapes.inc\n",
                 model.c_str());
    return 2;
  }
  for (Isa isa : supported_isas()) {
    const DWConvKernels* dk = dwconv_kernels_for(isa);
    const EpilogueKernels* ek = epilogue_kernels_for(isa);
    const Conv2DKernels* ck = conv2d_kernels_for(isa);
    const FCKernels* fk = fc_kernels_for(isa);
    const PoolKernels* pk = pool_kernels_for(isa);
    std::printf("== %s (%s)\n", isa_name(isa), model.c_str());
    double total_f32 = 0, total_q = 0, total_epi = 0, total_macs = 0;
    for (const DW& d : dws) {
      DWConvShape s{
          d.h, d.w, d.c, d.k, d.sh, d.sw, (d.h + d.sh - 1) / d.sh, (d.w + d.sw - 1) / d.sw};
      const size_t kc = d.k * d.c, in_n = d.h * d.w * d.c, out_px = s.out_height * s.out_width;
      auto x = rnd(in_n, 1), pb = rnd(d.c, 2), w = rnd(kc * 9, 3), sc = rnd(kc, 4), bi = rnd(kc, 5);
      std::vector<float> out(out_px * kc);
      Aligned pk32(dk->packed_f32_bytes(s));
      dk->pack_f32(s, w.data(), pk32.p);
      const double t = time_us([&] {
        dk->run_rows_f32(s, x.data(), pb.data(), pk32.p, sc.data(), bi.data(), 0, s.out_height,
                         out.data());
      });
      std::vector<int8_t> wq(kc * 9, 3), q(in_n);
      Aligned pq(dk->packed_qs8_bytes(s));
      dk->pack_qs8(s, wq.data(), pq.p);
      const double tq = time_us([&] {
        const float is =
            dwconv_dynamic_input_scale(dk->input_absmax(x.data(), pb.data(), d.h * d.w, d.c));
        dk->quantize_input(x.data(), pb.data(), d.h * d.w, d.c, is, q.data());
        dk->run_rows_qs8(s, q.data(), pq.p, sc.data(), is, sc.data(), bi.data(), 0, s.out_height,
                         out.data());
      });
      // DS-half epilogue: residual (repeated k times), PReLU, BN, float + bits.
      auto res = rnd(out_px * d.c, 6), th = rnd(kc, 7);
      std::vector<BitWord> bits(out_px * words_for_channels(kc));
      Epilogue ep;
      ep.residual = res.data();
      ep.residual_channels = d.c;
      ep.prelu_slope = sc.data();
      ep.post_scale = sc.data();
      ep.post_bias = bi.data();
      ep.threshold = th.data();
      ep.bits = bits.data();
      const double te = time_us([&] { ek->rows(ep, kc, 0, out_px, out.data()); });
      const double macs = static_cast<double>(out_px * kc * 9);
      std::printf(
          "  dw %4zux%-4zu C%-5zu k%zu s(%zu,%zu)  f32 %7.1f us %6.1f GFLOP/s | int8 "
          "(absmax+quant+conv) %7.1f us | epilogue %6.1f us (%5.2f GB/s)  x%d\n",
          d.h, d.w, d.c, d.k, d.sh, d.sw, t, 2 * macs / t * 1e-3, tq, te,
          static_cast<double>(out_px * kc * 8 + out_px * d.c * 4 + bits.size() * 8) / te * 1e-3,
          d.count);
      total_f32 += t * d.count;
      total_q += tq * d.count;
      total_epi += te * d.count;
      total_macs += macs * d.count;
    }
    // stem
    Conv2DShape cs{224, 224, 3, 16, 3, 3, 2, 2, 1, 1, 1, 1, 112, 112};
    auto sx = rnd(224 * 224 * 3, 8), sw = rnd(16 * 27, 9), sb = rnd(16, 10);
    std::vector<float> so(112 * 112 * 16);
    Aligned sp(ck->packed_bytes(cs));
    ck->pack(cs, sw.data(), sp.p);
    const double ts =
        time_us([&] { ck->run_rows(cs, sx.data(), sp.p, sb.data(), true, 0, 112, so.data()); });
    const double stem_macs = 112.0 * 112 * 16 * 27;
    std::printf("  stem 224x224x3->16 s2       %7.1f us %6.1f GFLOP/s\n", ts,
                2 * stem_macs / ts * 1e-3);
    // FC
    auto fx = rnd(2048, 11), fw = rnd(2048 * 1000, 12), fb = rnd(1000, 13);
    std::vector<int8_t> fq(2048 * 1000, 5);
    std::vector<BitWord> planes(8 * 1000 * 32, 0x5555aaaa12345678ull);
    std::vector<float> fo(1000);
    const double tf =
        time_us([&] { fk->f32(2048, 1000, fx.data(), fw.data(), fb.data(), fo.data()); });
    const double tfq = time_us(
        [&] { fk->qs8(2048, 1000, fx.data(), fq.data(), fb.data(), fb.data(), fo.data()); });
    const double tfb = time_us([&] {
      fk->bitplane8(2048, 1000, fx.data(), planes.data(), fb.data(), fb.data(), fo.data());
    });
    std::printf(
        "  fc 2048->1000: f32 %7.1f us (%5.1f GFLOP/s, %5.1f GB/s) | qs8 %7.1f us | bitplane8 "
        "%7.1f us\n",
        tf, 2 * 2048e3 / tf * 1e-3, 2048e3 * 4 / tf * 1e-3, tfq, tfb);
    // pools
    AvgPoolShape ap{56, 56, 32, 2, 2, 2, 2, 28, 28};
    auto px = rnd(56 * 56 * 32, 14);
    std::vector<float> po(28 * 28 * 32);
    const double tp = time_us([&] { pk->avgpool(ap, px.data(), po.data()); });
    auto gx = rnd(49 * 2048, 15);
    std::vector<float> go(2048);
    const double tg = time_us([&] { pk->global_avgpool(gx.data(), 49, 2048, go.data()); });
    std::printf("  avgpool 2x2 56x56x32 %6.1f us | global avgpool 7x7x2048 %6.1f us\n", tp, tg);
    std::printf(
        "  TOTAL dw f32 %.1f us (%.2f M MAC, %.1f GFLOP/s) + stem %.1f us + fc f32 %.1f us = %.1f "
        "us; dw epilogues %.1f us; dw int8 %.1f us\n",
        total_f32, total_macs * 1e-6, 2 * total_macs / total_f32 * 1e-3, ts, tf,
        total_f32 + ts + tf, total_epi, total_q);
  }
}
