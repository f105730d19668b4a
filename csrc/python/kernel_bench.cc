// qbinfer._testing.bench: microbenchmark drivers for benchmarks/test_bench_kernels.py. A
// KernelBench owns random inputs and weights packed once (as the engine packs them at load) for
// one kernel family, one shape and one ISA; run(n) calls the kernel n times with the GIL
// released, so a Python timer sees the kernel, not packing or allocation. Not for tests.
#include "python/kernel_bench.h"

#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "engine/kernel_table.h"
#include "python/peak.h"
#include "qbinfer/isa.h"

namespace py = pybind11;

namespace qbinfer {
namespace {

std::size_t arg(const py::dict& d, const char* key, std::size_t fallback) {
  return d.contains(key) ? py::cast<std::size_t>(d[key]) : fallback;
}

std::size_t need(const py::dict& d, const char* key) {
  if (!d.contains(key)) throw py::value_error(std::string("KernelBench: missing '") + key + "'");
  return py::cast<std::size_t>(d[key]);
}

class KernelBench {
 public:
  KernelBench(const std::string& family, const std::string& isa_name, const py::dict& p)
      : family_(family) {
    const Isa isa = isa_from_name(isa_name);  // std::invalid_argument: a ValueError
    const KernelTable& k = kernel_table_for(isa);
    if (family == "bconv") {
      setup_bconv(k, p);
    } else if (family == "dwconv_f32" || family == "dwconv_qs8") {
      setup_dwconv(k, p, family == "dwconv_qs8");
    } else if (family == "conv2d") {
      setup_conv2d(k, p);
    } else if (family == "fc_f32" || family == "fc_qs8" || family == "fc_bitplane8" ||
               family == "fc_bitplane8_packed") {
      setup_fc(k, p);
    } else if (family == "epilogue") {
      setup_epilogue(k, p);
    } else if (family == "bitpack") {
      setup_bitpack(k, p);
    } else if (family == "bfc") {
      setup_bfc(k, p);
    } else if (family == "bconv_general") {
      setup_bconv_general(k, p);
    } else {
      throw py::value_error("KernelBench: unknown family '" + family + "'");
    }
  }

  void run(std::size_t n) {
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < n; ++i) body_();
  }

  const std::string& family() const { return family_; }
  const std::string& entry() const { return entry_; }
  double binary_macs() const { return binary_macs_; }
  double float_macs() const { return float_macs_; }
  double elements() const { return elements_; }

 private:
  template <class T>
  std::vector<T> random(std::size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::vector<T> v(n);
    std::uniform_real_distribution<float> d(lo, hi);
    for (auto& x : v) x = static_cast<T>(d(rng_));
    return v;
  }
  std::vector<BitWord> random_bits(std::size_t rows, std::size_t channels) {
    const std::size_t words = words_for_channels(channels);
    std::vector<BitWord> v(rows * words);
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t w = 0; w < words; ++w) {
        BitWord x = (static_cast<BitWord>(rng_()) << 32) ^ rng_();
        const std::size_t valid = std::min<std::size_t>(64, channels - w * 64);
        if (valid < 64) x &= (BitWord{1} << valid) - 1;  // tail bits 0
        v[r * words + w] = x;
      }
    }
    return v;
  }

  void setup_bconv(const KernelTable& k, const py::dict& p) {
    const BConvShape s{
        need(p, "h"),  need(p, "w"), need(p, "ci"),
        need(p, "co"), need(p, "k"), arg(p, "pad", 0) ? BinaryPadding::kOne : BinaryPadding::kZero};
    bits_ = random_bits(s.height * s.width, s.in_channels);
    const std::vector<BitWord> w = random_bits(s.out_channels * s.kernel * s.kernel, s.in_channels);
    packed_ = AlignedBuffer(k.bconv->packed_weight_bytes(s));
    k.bconv->pack_weight(s, w.data(), packed_.data());
    f1_ = random<float>(s.out_channels, 0.01f, 0.1f);
    f2_ = random<float>(s.out_channels);
    out_.assign(s.height * s.width * s.out_channels, 0.0f);
    const BConvKernels* bk = k.bconv;
    entry_ = bk->isa;
    binary_macs_ = static_cast<double>(s.height * s.width * s.out_channels * s.in_channels *
                                       s.kernel * s.kernel);
    body_ = [this, s, bk] {
      bk->run_rows(s, bits_.data(), packed_.data(), f1_.data(), f2_.data(), 0, s.height,
                   out_.data());
    };
  }

  // The binary FC over one packed pixel: ci channels in, co outputs (weights in file layout).
  void setup_bfc(const KernelTable& k, const py::dict& p) {
    const std::size_t ci = need(p, "ci"), co = need(p, "co");
    bits_ = random_bits(1, ci);
    weight_bits_ = random_bits(co, ci);
    f1_ = random<float>(co, 0.01f, 0.1f);
    f2_ = random<float>(co);
    out_.assign(co, 0.0f);
    const BFCKernels* bk = k.bfc;
    entry_ = bk->isa;
    binary_macs_ = static_cast<double>(ci * co);
    body_ = [this, ci, co, bk] {
      bk->run(ci, co, bits_.data(), weight_bits_.data(), f1_.data(), f2_.data(), out_.data());
    };
  }

  // kh, kw (default k), sh, sw (default stride, 1), pads pt, pl, pb, pr (default k / 2).
  void setup_bconv_general(const KernelTable& k, const py::dict& p) {
    const std::size_t h = need(p, "h"), w = need(p, "w"), ci = need(p, "ci"), co = need(p, "co");
    const std::size_t kh = arg(p, "kh", arg(p, "k", 3)), kw = arg(p, "kw", arg(p, "k", 3));
    const std::size_t sh = arg(p, "sh", arg(p, "stride", 1)),
                      sw = arg(p, "sw", arg(p, "stride", 1));
    const std::size_t pt = arg(p, "pt", kh / 2), pl = arg(p, "pl", kw / 2);
    const std::size_t pb = arg(p, "pb", kh / 2), pr = arg(p, "pr", kw / 2);
    const BConvGeneralShape s{h,
                              w,
                              ci,
                              co,
                              kh,
                              kw,
                              sh,
                              sw,
                              pt,
                              pl,
                              (h + pt + pb - kh) / sh + 1,
                              (w + pl + pr - kw) / sw + 1,
                              arg(p, "pad", 0) ? BinaryPadding::kOne : BinaryPadding::kZero};
    bits_ = random_bits(h * w, ci);
    const std::vector<BitWord> wt = random_bits(co * kh * kw, ci);
    packed_ = AlignedBuffer(k.bconv_general->packed_weight_bytes(s));
    k.bconv_general->pack_weight(s, wt.data(), packed_.data());
    f1_ = random<float>(co, 0.01f, 0.1f);
    f2_ = random<float>(co);
    out_.assign(s.out_height * s.out_width * co, 0.0f);
    const BConvGeneralKernels* bk = k.bconv_general;
    entry_ = bk->isa;
    binary_macs_ = static_cast<double>(s.out_height * s.out_width * co * ci * kh * kw);
    body_ = [this, s, bk] {
      bk->run_rows(s, bits_.data(), packed_.data(), f1_.data(), f2_.data(), 0, s.out_height,
                   out_.data());
    };
  }

  void setup_dwconv(const KernelTable& k, const py::dict& p, bool int8) {
    const std::size_t h = need(p, "h"), w = need(p, "w"), c = need(p, "c");
    const std::size_t sh = arg(p, "sh", 1), sw = arg(p, "sw", 1), m = arg(p, "multiplier", 1);
    // "dilation" (the atrous rate, stride 1 only) runs the dilated f32 path.
    const DWConvShape s{
        h, w, c, m, sh, sw, (h + sh - 1) / sh, (w + sw - 1) / sw, arg(p, "dilation", 1)};
    in_ = random<float>(h * w * c);
    f1_ = random<float>(m * c);
    f2_ = random<float>(m * c);
    f3_ = random<float>(c, -0.1f, 0.1f);
    out_.assign(s.out_height * s.out_width * m * c, 0.0f);
    const DWConvKernels* dk = k.dwconv;
    entry_ = dk->isa;
    float_macs_ = static_cast<double>(s.out_height * s.out_width * m * c * 9);
    if (int8) {
      std::vector<std::int8_t> q(m * c * 9);
      for (auto& x : q) x = static_cast<std::int8_t>(static_cast<int>(rng_() % 255) - 127);
      packed_ = AlignedBuffer(dk->packed_qs8_bytes(s));
      dk->pack_qs8(s, q.data(), packed_.data());
      codes_.assign(h * w * c, 0);
      f4_ = random<float>(m * c, 0.001f, 0.01f);
      body_ = [this, s, dk] {
        const std::size_t pixels = s.in_height * s.in_width;
        const float scale = dwconv_dynamic_input_scale(
            dk->input_absmax(in_.data(), f3_.data(), pixels, s.channels));
        dk->quantize_input(in_.data(), f3_.data(), pixels, s.channels, scale, codes_.data());
        dk->run_rows_qs8(s, codes_.data(), packed_.data(), f4_.data(), scale, f1_.data(),
                         f2_.data(), 0, s.out_height, out_.data());
      };
    } else {
      const std::vector<float> wf = random<float>(m * c * 9);
      packed_ = AlignedBuffer(dk->packed_f32_bytes(s));
      dk->pack_f32(s, wf.data(), packed_.data());
      body_ = [this, s, dk] {
        dk->run_rows_f32(s, in_.data(), f3_.data(), packed_.data(), f1_.data(), f2_.data(), 0,
                         s.out_height, out_.data());
      };
    }
  }

  void setup_conv2d(const KernelTable& k, const py::dict& p) {
    const std::size_t h = need(p, "h"), w = need(p, "w"), ci = need(p, "ci"), co = need(p, "co");
    const std::size_t kh = arg(p, "k", 3), st = arg(p, "stride", 1), pad = arg(p, "pad", kh / 2);
    const std::size_t ho = (h + 2 * pad - kh) / st + 1, wo = (w + 2 * pad - kh) / st + 1;
    const Conv2DShape s{h, w, ci, co, kh, kh, st, st, pad, pad, pad, pad, ho, wo};
    in_ = random<float>(h * w * ci);
    const std::vector<float> wf = random<float>(co * kh * kh * ci);
    f1_ = random<float>(co);
    out_.assign(ho * wo * co, 0.0f);
    packed_ = AlignedBuffer(k.conv2d->packed_bytes(s));
    k.conv2d->pack(s, wf.data(), packed_.data());
    const Conv2DKernels* ck = k.conv2d;
    entry_ = ck->isa;
    float_macs_ = static_cast<double>(ho * wo * co * ci * kh * kh);
    body_ = [this, s, ck] {
      ck->run_rows(s, in_.data(), packed_.data(), f1_.data(), true, 0, s.out_height, out_.data());
    };
  }

  void setup_fc(const KernelTable& k, const py::dict& p) {
    const std::size_t c = need(p, "ci"), o = need(p, "co");
    in_ = random<float>(c);
    f1_ = random<float>(o);
    f2_ = random<float>(o, 0.001f, 0.01f);
    out_.assign(o, 0.0f);
    const FCKernels* fk = k.fc;
    entry_ = fk->isa;
    float_macs_ = static_cast<double>(c * o);
    if (family_ == "fc_f32") {
      f3_ = random<float>(o * c);
      body_ = [this, c, o, fk] { fk->f32(c, o, in_.data(), f3_.data(), f1_.data(), out_.data()); };
    } else if (family_ == "fc_qs8") {
      codes_.resize(o * c);
      for (auto& x : codes_) x = static_cast<std::int8_t>(static_cast<int>(rng_() % 255) - 127);
      body_ = [this, c, o, fk] {
        fk->qs8(c, o, in_.data(), codes_.data(), f2_.data(), f1_.data(), out_.data());
      };
    } else if (family_ == "fc_bitplane8") {
      bits_ = random_bits(8 * o, c);
      body_ = [this, c, o, fk] {
        fk->bitplane8(c, o, in_.data(), bits_.data(), f2_.data(), f1_.data(), out_.data());
      };
    } else {  // the engine's bitplane8: the planes packed into int8 codes at load
      bits_ = random_bits(8 * o, c);
      codes_.resize(o * c);
      fc_bitplane8_pack(c, o, bits_.data(), codes_.data());
      body_ = [this, c, o, fk] {
        fk->bitplane8_packed(c, o, in_.data(), codes_.data(), f2_.data(), f1_.data(), out_.data());
      };
    }
  }

  // The B half's tail on a whole image: residual, PReLU, affine, and optionally the bits.
  void setup_epilogue(const KernelTable& k, const py::dict& p) {
    const std::size_t pixels = need(p, "pixels"), c = need(p, "channels");
    const std::size_t rc = arg(p, "residual_channels", c);
    const bool bits = arg(p, "bits", 0) != 0;
    in_ = random<float>(pixels * c);
    out_.assign(pixels * c, 0.0f);
    f1_ = random<float>(pixels * rc);
    f2_ = random<float>(c, 0.0f, 0.3f);
    f3_ = random<float>(c);
    f4_ = random<float>(c);
    bits_.assign(pixels * words_for_channels(c), 0);
    ep_.residual = f1_.data();
    ep_.residual_channels = rc;
    ep_.prelu_slope = f2_.data();
    ep_.post_scale = f3_.data();
    ep_.post_bias = f4_.data();
    if (bits) {
      ep_.threshold = f4_.data();
      ep_.bits = bits_.data();
    }
    const EpilogueKernels* ek = k.epilogue;
    entry_ = ek->isa;
    elements_ = static_cast<double>(pixels * c);
    body_ = [this, pixels, c, ek] {
      // Rows of a conv's output are rewritten each time, as the engine's blocks are.
      std::memcpy(out_.data(), in_.data(), pixels * c * sizeof(float));
      ek->rows(ep_, c, 0, pixels, out_.data());
    };
  }

  void setup_bitpack(const KernelTable& k, const py::dict& p) {
    const std::size_t pixels = need(p, "pixels"), c = need(p, "channels");
    in_ = random<float>(pixels * c);
    f1_ = random<float>(c, -0.1f, 0.1f);
    bits_.assign(pixels * words_for_channels(c), 0);
    const BitpackKernels* bk = k.bitpack;
    entry_ = bk->isa;
    elements_ = static_cast<double>(pixels * c);
    body_ = [this, pixels, c, bk] {
      bk->f32_nhwc(in_.data(), pixels, c, f1_.data(), bits_.data());
    };
  }

  std::string family_;
  std::string entry_;
  std::mt19937 rng_{12345};
  std::vector<float> in_, out_, f1_, f2_, f3_, f4_;
  std::vector<BitWord> bits_;
  std::vector<BitWord> weight_bits_;  // bfc: [co][words], the file layout
  std::vector<std::int8_t> codes_;
  AlignedBuffer packed_;
  Epilogue ep_{};
  std::function<void()> body_;
  double binary_macs_ = 0.0, float_macs_ = 0.0, elements_ = 0.0;
};

}  // namespace

void register_kernel_bench(py::module_& testing) {
  py::module_ m = testing.def_submodule("bench", "microbenchmark drivers, for benchmarks/ only");
  py::class_<KernelBench>(m, "KernelBench",
                          "KernelBench(family, isa, params): random inputs and packed weights "
                          "for one kernel family ('bconv', 'dwconv_f32', 'dwconv_qs8', 'conv2d', "
                          "'fc_f32', 'fc_qs8', 'fc_bitplane8', 'epilogue', 'bitpack', "
                          "'bconv_general', 'fc_bitplane8_packed'), shape "
                          "params (dict) and ISA; run(n) calls the kernel n times.")
      .def(py::init<const std::string&, const std::string&, const py::dict&>(), py::arg("family"),
           py::arg("isa"), py::arg("params"))
      .def("run", &KernelBench::run, py::arg("n") = 1)
      .def_property_readonly("family", &KernelBench::family)
      .def_property_readonly("entry", &KernelBench::entry, "The kernel entry's ISA name.")
      .def_property_readonly("binary_macs", &KernelBench::binary_macs, "Per call.")
      .def_property_readonly("float_macs", &KernelBench::float_macs, "Per call.")
      .def_property_readonly("elements", &KernelBench::elements, "Per call (epilogue, bitpack).");
  m.def(
      "peak",
      [](const std::string& isa, double seconds) {
        py::dict d;
        double b = 0.0, f = 0.0;
        {
          py::gil_scoped_release release;
          b = peak_binary_macs_per_s(isa.c_str(), seconds);
          f = peak_float_macs_per_s(isa.c_str(), seconds);
        }
        d["binary_macs_per_s"] = b;
        d["float_macs_per_s"] = f;
        return d;
      },
      py::arg("isa"), py::arg("seconds") = 0.3,
      "This core's ceilings for one ISA: XOR+popcount binary MACs/s over an L1-resident "
      "buffer and independent-FMA float MACs/s (0 where the ISA is not supported). isa may "
      "also be 'avx512_vpopcnt'.");
  m.def(
      "read_bandwidth",
      [](const std::string& isa, std::size_t bytes, double seconds) {
        py::gil_scoped_release release;
        return peak_read_bytes_per_s(isa.c_str(), bytes, seconds);
      },
      py::arg("isa"), py::arg("bytes"), py::arg("seconds") = 0.2,
      "Bytes per second this core reads from a buffer of `bytes`, read over and over: the "
      "bandwidth of the cache level (or DRAM) a buffer of that size lives in (0 where the ISA "
      "is not supported).");
}

}  // namespace qbinfer
