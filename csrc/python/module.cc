// qbinfer._core: the Python binding. This layer owns validation (dtype, rank, shapes)
// and memory layout; the kernels it calls only compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cctype>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/model.h"
#include "format/errors.h"
#include "kernels/bitpack/bitpack.h"
#include "python/preprocess_binding.h"
#include "python/shape_str.h"
#include "qbinfer/bit_contract.h"
#include "qbinfer/isa.h"

namespace py = pybind11;

namespace {

// What the kernels need: C order and natural alignment (an unaligned float* is UB
// even where x86 would tolerate it). Constructing one from an ndarray copies only
// when the input lacks either. No forcecast: dtype is checked explicitly first so the
// user gets a dtype error instead of a silent conversion.
constexpr int kKernelReady = py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
using F32Array = py::array_t<float, kKernelReady>;
using U64Array = py::array_t<std::uint64_t, py::array::c_style>;
using qbinfer::shape_str;

// Checks that `obj` is a native-endian float32 ndarray and returns it kernel-ready.
F32Array as_f32(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string("bitpack: ") + name +
                         " must be a numpy.ndarray of dtype float32, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  // array_t<float>::check_ compares dtypes with PyArray_EquivTypes, so byte-swapped
  // float32 ('>f4' here) is rejected too: the kernels read native floats.
  if (!py::isinstance<py::array_t<float>>(obj)) {
    const auto arr = py::reinterpret_borrow<py::array>(obj);
    throw py::type_error(std::string("bitpack: ") + name + " must have dtype float32, got " +
                         std::string(py::str(arr.dtype())));
  }
  return F32Array(py::reinterpret_borrow<py::object>(obj));
}

U64Array bitpack(const py::object& x_obj, const py::object& thresholds_obj) {
  const F32Array x = as_f32(x_obj, "x");
  if (x.ndim() < 1) {
    throw py::value_error(
        "bitpack: x must have rank >= 1 with channels on the last axis, "
        "got a 0-d array");
  }
  const std::size_t channels = static_cast<std::size_t>(x.shape(x.ndim() - 1));
  if (channels == 0) {
    throw py::value_error("bitpack: x has zero channels (last axis), shape " + shape_str(x));
  }

  F32Array thresholds;
  const float* t_ptr = nullptr;
  if (!thresholds_obj.is_none()) {
    thresholds = as_f32(thresholds_obj, "thresholds");
    if (thresholds.ndim() != 1 || static_cast<std::size_t>(thresholds.shape(0)) != channels) {
      throw py::value_error("bitpack: thresholds must have shape (" + std::to_string(channels) +
                            ",) to match x of shape " + shape_str(x) + ", got shape " +
                            shape_str(thresholds));
    }
    t_ptr = thresholds.data();
  }

  const std::size_t words = qbinfer::words_for_channels(channels);
  std::vector<py::ssize_t> out_shape(x.shape(), x.shape() + x.ndim());
  out_shape.back() = static_cast<py::ssize_t>(words);
  U64Array out(out_shape);

  // Zero-size leading axes are legal (an empty batch) and need no kernel call.
  const std::size_t pixels = static_cast<std::size_t>(x.size()) / channels;
  const float* x_ptr = x.data();
  qbinfer::BitWord* out_ptr = out.mutable_data();
  {
    // `x`, `thresholds` and `out` hold references, so the buffers outlive the call.
    py::gil_scoped_release release;
    qbinfer::bitpack_f32_nhwc__reference(x_ptr, pixels, channels, t_ptr, out_ptr);
  }
  return out;
}

#define QBINFER_STRINGIFY_(x) #x
#define QBINFER_STRINGIFY(x) QBINFER_STRINGIFY_(x)

const char* compiler_id() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " QBINFER_STRINGIFY(_MSC_FULL_VER);
#else
  return "unknown";
#endif
}

const char* target_arch() {
#if defined(__x86_64__) || defined(_M_X64)
  return "x86_64";
#elif defined(__aarch64__) || defined(_M_ARM64)
  return "aarch64";
#else
  return "other";
#endif
}

// ---------------------------------------------------------------------------------------
// Exceptions: qbinfer._core.Error and its subclasses. ShapeError and DtypeError also derive
// from ValueError and TypeError, which pybind11's register_exception (one base) cannot
// express, so the classes are made with type() and C++ exceptions translated by hand.
// The references are deliberately leaked: the types live as long as the interpreter.
// ---------------------------------------------------------------------------------------
PyObject* g_error = nullptr;
PyObject* g_format_error = nullptr;
PyObject* g_shape_error = nullptr;
PyObject* g_dtype_error = nullptr;

PyObject* make_exception(py::module_& m, const char* name, py::tuple bases, const char* doc) {
  py::dict ns;
  ns["__module__"] = m.attr("__name__");
  ns["__doc__"] = doc;
  py::object cls = py::module_::import("builtins").attr("type")(name, bases, ns);
  m.attr(name) = cls;
  return cls.release().ptr();
}

// Messages quote names and paths from the file and the file system, which need not be
// UTF-8: never let the message itself fail to decode.
void set_error(PyObject* type, const char* what) {
  PyObject* msg =
      PyUnicode_DecodeUTF8(what, static_cast<Py_ssize_t>(std::strlen(what)), "backslashreplace");
  if (msg == nullptr) return;
  PyErr_SetObject(type, msg);
  Py_DECREF(msg);
}

void register_exceptions(py::module_& m) {
  const py::object builtins = py::module_::import("builtins");
  g_error = make_exception(m, "Error", py::make_tuple(builtins.attr("Exception")),
                           "Base of every error qbinfer raises about a file or an input.");
  const auto base = py::reinterpret_borrow<py::object>(g_error);
  g_format_error =
      make_exception(m, "FormatError", py::make_tuple(base),
                     "A .qbw file is damaged, hostile, or from an unsupported version.");
  g_shape_error = make_exception(m, "ShapeError", py::make_tuple(base, builtins.attr("ValueError")),
                                 "An input has the wrong rank or shape.");
  g_dtype_error = make_exception(m, "DtypeError", py::make_tuple(base, builtins.attr("TypeError")),
                                 "An input has the wrong dtype.");

  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const qbinfer::FormatError& e) {
      set_error(g_format_error, e.what());
    } catch (const qbinfer::ShapeError& e) {
      set_error(g_shape_error, e.what());
    } catch (const qbinfer::DtypeError& e) {
      set_error(g_dtype_error, e.what());
    } catch (const qbinfer::FileError& e) {
      // OSError(errno, strerror, filename) returns the matching subclass
      // (FileNotFoundError, IsADirectoryError, PermissionError, ...).
      const std::string& path = e.path();
      PyObject* filename =
          PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size()));
      if (filename == nullptr) return;  // the decode error stands
      py::object exc = py::module_::import("builtins")
                           .attr("OSError")(e.error_number(), std::strerror(e.error_number()),
                                            py::reinterpret_steal<py::object>(filename));
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    } catch (const qbinfer::Error& e) {
      set_error(g_error, e.what());
    }
  });
}

// Strings from a file are bytes: undecodable UTF-8 must not make a property raise.
py::str file_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

py::tuple value_shape(const qbinfer::ValueInfo& v) {
  return py::make_tuple(v.height, v.width, v.channels);
}

std::string shape_tuple_str(const std::vector<std::size_t>& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

qbinfer::Layout parse_layout(const std::string& layout) {
  std::string l = layout;
  for (char& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (l == "nchw") return qbinfer::Layout::kNCHW;
  if (l == "nhwc") return qbinfer::Layout::kNHWC;
  throw py::value_error("Model.run: layout must be 'nchw' or 'nhwc', got '" + layout + "'");
}

// The ISA of the engine: QBINFER_ISA or the best supported. A bad QBINFER_ISA is a
// ValueError naming the variable and the supported ISAs.
qbinfer::Isa active_isa_or_raise() {
  try {
    return qbinfer::active_isa();
  } catch (const std::runtime_error& e) {
    throw py::value_error(e.what());
  }
}

qbinfer::SplitPolicy parse_split(const std::string& split) {
  if (split == "work") return qbinfer::SplitPolicy::kByWork;
  if (split == "always") return qbinfer::SplitPolicy::kAlways;
  throw py::value_error("split must be 'work' or 'always', got '" + split + "'");
}

// max_memory: None for no limit, else a positive number of bytes (ModelOptions::max_memory).
std::uint64_t parse_max_memory(const py::object& max_memory) {
  if (max_memory.is_none()) return 0;
  if (PyBool_Check(max_memory.ptr()) || !PyIndex_Check(max_memory.ptr())) {
    throw py::type_error("max_memory must be an int (bytes) or None, got " +
                         std::string(py::str(py::type::of(max_memory).attr("__name__"))));
  }
  const py::int_ n = py::reinterpret_steal<py::int_>(PyNumber_Index(max_memory.ptr()));
  if (n.ptr() == nullptr) throw py::error_already_set();
  if (py::int_(0) >= n) {
    throw py::value_error(
        "max_memory must be a positive number of bytes, or None for no limit; "
        "got " +
        std::string(py::str(n)));
  }
  // Anything past 2^64 - 1 bytes is no limit in practice: clamped there.
  const py::int_ most(std::numeric_limits<std::uint64_t>::max());
  if (n > most) return std::numeric_limits<std::uint64_t>::max();
  return static_cast<std::uint64_t>(PyLong_AsUnsignedLongLong(n.ptr()));
}

qbinfer::ModelOptions model_options(int threads, const py::object& isa_obj,
                                    const std::string& split, const py::object& max_memory) {
  if (threads < 1 || threads > qbinfer::Model::kMaxThreads) {
    throw py::value_error("threads must be in 1.." + std::to_string(qbinfer::Model::kMaxThreads) +
                          ", got " + std::to_string(threads));
  }
  const qbinfer::Isa isa = isa_obj.is_none()
                               ? active_isa_or_raise()
                               : qbinfer::isa_from_name(py::cast<std::string>(isa_obj));
  qbinfer::ModelOptions options;
  options.threads = threads;
  options.kernels = &qbinfer::kernel_table_for(isa);
  options.split = parse_split(split);
  options.max_memory = parse_max_memory(max_memory);
  return options;
}

std::unique_ptr<qbinfer::Model> open_model(const py::object& path_obj, int threads,
                                           const py::object& isa_obj, const std::string& split,
                                           const py::object& max_memory) {
  const qbinfer::ModelOptions options = model_options(threads, isa_obj, split, max_memory);
  // str, bytes or os.PathLike, as open() takes, as the file system's bytes.
  const std::string path = py::bytes(py::module_::import("os").attr("fsencode")(path_obj));
  py::gil_scoped_release release;  // the CRC over a large file takes a while
  return std::make_unique<qbinfer::Model>(path, options);
}

// A model from the bytes of a .qbw file in any buffer-protocol object (bytes, bytearray,
// memoryview, a uint8 numpy array...), validated as a file is; `name` stands for the path in
// messages.
std::unique_ptr<qbinfer::Model> model_from_buffer(const py::buffer& data, const std::string& name,
                                                  int threads, const py::object& isa_obj,
                                                  const std::string& split,
                                                  const py::object& max_memory) {
  const qbinfer::ModelOptions options = model_options(threads, isa_obj, split, max_memory);
  // A C-contiguous byte view: strided or multi-byte layouts are refused, not reinterpreted.
  Py_buffer view;
  if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) throw py::error_already_set();
  struct Release {
    Py_buffer* view;
    ~Release() { PyBuffer_Release(view); }
  } release_view{&view};
  // Copied with the GIL held, so no Python thread changes the bytes half-way through.
  qbinfer::QbwFile file =
      qbinfer::QbwFile::from_memory(view.buf, static_cast<std::size_t>(view.len), name);
  py::gil_scoped_release release;  // the CRC and the weight repacking take a while
  return std::make_unique<qbinfer::Model>(std::move(file), options);
}

// The kernel entry each family uses in `t` (a family without kernels for the ISA falls back
// to its scalar entry).
py::dict kernel_names(const qbinfer::KernelTable& t) {
  py::dict d;
  d["bitpack"] = t.bitpack->isa;
  d["bconv"] = t.bconv->isa;
  d["conv2d"] = t.conv2d->isa;
  d["dwconv"] = t.dwconv->isa;
  d["elementwise"] = t.elementwise->isa;
  d["epilogue"] = t.epilogue->isa;
  d["fc"] = t.fc->isa;
  d["pool"] = t.pool->isa;
  d["concat"] = t.concat->isa;
  return d;
}

// Per step: (label, median microseconds) over `runs` runs of x[0].
py::list profile_steps(qbinfer::Model& model, const py::object& x_obj, int runs,
                       const std::string& layout_str, bool thread_cpu) {
  const qbinfer::Layout layout = parse_layout(layout_str);
  const qbinfer::ValueInfo& in = model.input();
  const F32Array x = as_f32(x_obj, "x");
  const std::size_t image = std::size_t{in.height} * in.width * in.channels;
  if (static_cast<std::size_t>(x.size()) < image) {
    throw py::value_error("Model._profile: x holds fewer floats than one image");
  }
  std::vector<double> ns;
  {
    py::gil_scoped_release release;
    ns = model.profile(x.data(), layout, runs, thread_cpu);
  }
  py::list out;
  for (std::size_t i = 0; i < ns.size(); ++i) {
    out.append(py::make_tuple(model.step_label(i), ns[i] / 1000.0));
  }
  return out;
}

py::list steps_list(const qbinfer::Model& model) {
  const auto& values = model.file().values();
  py::list steps;
  for (std::size_t i = 0; i < model.steps().size(); ++i) {
    const qbinfer::Step& s = model.steps()[i];
    py::dict d;
    d["label"] = model.step_label(i);
    d["kind"] = s.kind == qbinfer::StepKind::kOp          ? "op"
                : s.kind == qbinfer::StepKind::kConvChain ? "conv_chain"
                                                          : "epilogue_chain";
    py::list members;
    for (const std::uint32_t m : s.members()) members.append(m);
    d["ops"] = members;
    d["output"] = value_shape(values[s.out()]);
    d["packed_bytes"] = s.packed.size();
    d["inplace"] = s.inplace() != qbinfer::kNoValue;
    d["work_us"] = model.step_work_ns(i) / 1000.0;
    d["parts"] = s.parts;
    steps.append(d);
  }
  return steps;
}

py::array_t<float> run_model(qbinfer::Model& model, const py::object& x_obj,
                             const std::string& layout_str) {
  const qbinfer::Layout layout = parse_layout(layout_str);
  const bool nchw = layout == qbinfer::Layout::kNCHW;
  const char* layout_name = nchw ? "'nchw' [N, C, H, W]" : "'nhwc' [N, H, W, C]";
  if (!py::isinstance<py::array>(x_obj)) {
    throw qbinfer::DtypeError("Model.run: x must be a numpy.ndarray of dtype float32, got " +
                              std::string(py::str(py::type::of(x_obj).attr("__name__"))));
  }
  const auto arr = py::reinterpret_borrow<py::array>(x_obj);
  if (!py::isinstance<py::array_t<float>>(x_obj)) {
    throw qbinfer::DtypeError("Model.run: x must have dtype float32, got " +
                              std::string(py::str(arr.dtype())));
  }
  std::vector<std::size_t> got;
  for (py::ssize_t i = 0; i < arr.ndim(); ++i)
    got.push_back(static_cast<std::size_t>(arr.shape(i)));
  const qbinfer::ValueInfo& in = model.input();
  const std::vector<std::size_t> image =
      nchw ? std::vector<std::size_t>{in.channels, in.height, in.width}
           : std::vector<std::size_t>{in.height, in.width, in.channels};
  const std::vector<std::size_t> other =
      nchw ? std::vector<std::size_t>{in.height, in.width, in.channels}
           : std::vector<std::size_t>{in.channels, in.height, in.width};
  if (arr.ndim() != 4) {
    throw qbinfer::ShapeError("Model.run: x must be a rank-4 batch, layout " +
                              std::string(layout_name) + ", of images " + shape_tuple_str(image) +
                              "; got shape " + shape_tuple_str(got));
  }
  const std::vector<std::size_t> per_image(got.begin() + 1, got.end());
  if (per_image != image) {
    std::string hint;
    if (per_image == other) {
      hint = std::string("; this looks like layout '") + (nchw ? "nhwc" : "nchw") +
             "': pass layout='" + (nchw ? "nhwc" : "nchw") + "'";
    }
    throw qbinfer::ShapeError("Model.run: with layout " + std::string(layout_name) +
                              " each image must have shape " + shape_tuple_str(image) + ", got " +
                              shape_tuple_str(per_image) + " (x has shape " + shape_tuple_str(got) +
                              ")" + hint);
  }
  if (got[0] < 1) {
    throw qbinfer::ShapeError("Model.run: the batch is empty (x has shape " + shape_tuple_str(got) +
                              "); N must be >= 1");
  }
  // Copies only when x is not C-contiguous and aligned.
  const F32Array x(py::reinterpret_borrow<py::object>(x_obj));
  const std::size_t batch = got[0];
  const qbinfer::ValueInfo& o = model.output();
  std::vector<py::ssize_t> out_shape{static_cast<py::ssize_t>(batch)};
  if (o.height == 1 && o.width == 1) {
    out_shape.push_back(static_cast<py::ssize_t>(o.channels));
  } else if (layout == qbinfer::Layout::kNHWC) {
    out_shape.insert(out_shape.end(),
                     {static_cast<py::ssize_t>(o.height), static_cast<py::ssize_t>(o.width),
                      static_cast<py::ssize_t>(o.channels)});
  } else {
    out_shape.insert(out_shape.end(),
                     {static_cast<py::ssize_t>(o.channels), static_cast<py::ssize_t>(o.height),
                      static_cast<py::ssize_t>(o.width)});
  }
  py::array_t<float> out(out_shape);
  const float* x_ptr = x.data();
  float* out_ptr = out.mutable_data();
  {
    py::gil_scoped_release release;
    model.run(x_ptr, batch, layout, out_ptr);
  }
  return out;
}

py::list ops_list(const qbinfer::Model& model) {
  const auto& values = model.file().values();
  py::list ops;
  for (const qbinfer::Op& op : model.ops()) {
    py::dict d;
    d["index"] = op.index;
    d["type"] = qbinfer::op_type_name(static_cast<std::uint32_t>(op.type));
    d["name"] = file_str(std::string(op.name()));
    py::list inputs;
    for (const std::uint32_t v : op.inputs) inputs.append(value_shape(values[v]));
    d["inputs"] = inputs;
    d["output"] = value_shape(values[op.output]);
    d["output_dtype"] = qbinfer::dtype_name(values[op.output].dtype);
    d["params"] = op.stats().params;
    d["bytes"] = op.stats().bytes;
    d["flops"] = op.stats().flops;
    d["bops"] = op.stats().bops;
    py::dict attrs;
    for (const auto& [name, value] : qbinfer::named_attrs(op)) attrs[name] = value;
    d["attrs"] = attrs;
    py::list tensors;
    for (const qbinfer::TensorInfo* t : op.tensors) {
      if (t == nullptr) {
        tensors.append(py::none());
        continue;
      }
      py::dict td;
      td["name"] = file_str(t->name);
      td["dtype"] = qbinfer::dtype_name(t->dtype);
      py::tuple shape(t->dims.size());
      for (std::size_t i = 0; i < t->dims.size(); ++i) shape[i] = t->dims[i];
      td["shape"] = shape;
      tensors.append(td);
    }
    d["tensors"] = tensors;
    ops.append(d);
  }
  return ops;
}

void register_model(py::module_& m) {
  using qbinfer::Model;
  py::class_<Model>(m, "Model",
                    R"doc(A loaded .qbw model: the validated graph, its weights (read into memory)
and a planned activation arena. The file is read once: it may change or go away after.

Model(path, threads=1, isa=None, split='work'): path is str, bytes or os.PathLike (a
path; Model.from_buffer takes a file's contents). Every header field, table, shape and
op attribute is checked before use: a damaged or hostile file raises FormatError naming
what is wrong and where; a missing file raises FileNotFoundError, a FIFO, socket or
device FormatError (without blocking), a path with a NUL byte ValueError.
threads (1..1024, taken as given: qbinfer.load caps it to the usable CPUs): a batch
smaller than threads runs image by image with each step split over as many threads as
its estimated work pays for (split='work'), or over all of them (split='always', for
tests); a larger batch runs that many images at once, each in its own arena. Results do
not depend on it. isa: None for the active ISA (QBINFER_ISA or the best this CPU runs),
or one of supported_isas(). max_memory (bytes, default 2 GiB; None: no limit) bounds
what the load commits in proportion to the graph, one activation arena plus the
repacked weights: a file that needs more raises FormatError naming the op that pushes it
over. QBINFER_FUSION=0 in the environment turns load-time fusion off (for tests). run() may be called from several threads at once: each call gets its
own arena, and the GIL is released while it runs.)doc")
      .def(py::init(&open_model), py::arg("path"), py::arg("threads") = 1,
           py::arg("isa") = py::none(), py::arg("split") = "work",
           py::arg("max_memory") = py::int_(qbinfer::kDefaultMaxMemory))
      .def_static("from_buffer", &model_from_buffer, py::arg("data"), py::arg("name"),
                  py::arg("threads") = 1, py::arg("isa") = py::none(), py::arg("split") = "work",
                  py::arg("max_memory") = py::int_(qbinfer::kDefaultMaxMemory),
                  "A model from the bytes of a .qbw file in a C-contiguous buffer (bytes, "
                  "bytearray, memoryview, ...), copied and validated exactly as a file is; "
                  "`name` stands for the path in error messages.")
      .def("run", &run_model, py::arg("x"), py::arg("layout") = "nchw",
           R"doc(Logits of a float32 batch: x is [N, C, H, W] (layout='nchw') or [N, H, W, C]
(layout='nhwc'), already preprocessed; returns float32 [N, num_classes]. Raises
DtypeError for a non-float32 array and ShapeError for a wrong rank, image shape or
an empty batch. Non-contiguous input is copied. Releases the GIL.)doc")
      .def("ops", &ops_list,
           "One dict per op, in execution order: index, type, name, inputs (shape tuples), "
           "output, output_dtype, params, bytes, flops, bops, attrs (dict), tensors.")
      .def_property_readonly(
          "input_shape", [](const Model& md) { return value_shape(md.input()); },
          "(H, W, C) of one input image.")
      .def_property_readonly("num_classes", &Model::num_classes)
      .def_property_readonly("class_names",
                             [](const Model& md) {
                               py::list names;
                               for (const auto& n : md.file().class_names())
                                 names.append(file_str(n));
                               return names;
                             })
      .def_property_readonly("preprocessing",
                             [](const Model& md) {
                               const qbinfer::Preprocessing& p = md.file().preprocessing();
                               py::dict d;
                               d["resize_short"] = p.resize_short;
                               d["crop"] = py::make_tuple(p.crop_height, p.crop_width);
                               d["mean"] = py::make_tuple(p.mean[0], p.mean[1], p.mean[2]);
                               d["std"] = py::make_tuple(p.std[0], p.std[1], p.std[2]);
                               d["pixel_scale"] = p.pixel_scale;
                               return d;
                             })
      .def_property_readonly("model_name",
                             [](const Model& md) { return file_str(md.file().model_name()); })
      .def_property_readonly("producer",
                             [](const Model& md) { return file_str(md.file().producer()); })
      .def_property_readonly("metadata_json",
                             [](const Model& md) { return file_str(md.file().metadata_json()); })
      .def_property_readonly(
          "output_op",
          [](const Model& md) {
            // Every value has one producer (the loader checks it) and the output is not the
            // input, so exactly one op writes it.
            for (const qbinfer::Op& op : md.ops()) {
              if (op.output == md.file().output_value()) return op.index;
            }
            throw std::logic_error("no op writes the output value");
          },
          "Index (into ops()) of the op that writes the output: Model.output_kind reads it.")
      .def_property_readonly("format_version",
                             [](const Model& md) {
                               return py::make_tuple(md.file().version_major(),
                                                     md.file().version_minor());
                             })
      .def_property_readonly("arena_bytes", &Model::arena_bytes,
                             "Activation arena bytes of one image (one per concurrent image).")
      .def_property_readonly("weights_bytes", &Model::weights_bytes,
                             "Bytes of the tensors the graph uses.")
      .def_property_readonly("threads", &Model::threads,
                             "Threads of the pool (the calling thread included).")
      .def_property_readonly("uses_pool", &Model::uses_pool,
                             "Whether some step splits or a batch may run one image per "
                             "thread: False when no step is worth splitting (no threads run).")
      .def_property_readonly("workspaces", &Model::workspaces,
                             "Arenas made so far: one per call that ran at the same time.")
      .def_property_readonly(
          "isa", [](const Model& md) { return qbinfer::isa_name(md.kernels().isa); },
          "The ISA whose kernels this model runs.")
      .def_property_readonly(
          "kernels", [](const Model& md) { return kernel_names(md.kernels()); },
          "Per kernel family, the entry it runs (a family without kernels "
          "for the ISA uses its scalar entry).")
      .def_property_readonly("fused", &Model::fused,
                             "Whether load-time fusion is on (QBINFER_FUSION=0 turns it off).")
      .def_property_readonly("packed_bytes", &Model::packed_bytes,
                             "Bytes of weights repacked at load for the kernels.")
      .def("_profile", &profile_steps, py::arg("x"), py::arg("runs") = 20,
           py::arg("layout") = "nchw", py::arg("thread_cpu") = false,
           "Per step, (label, median microseconds) over `runs` runs of the first image of x "
           "(as a batch of one runs, threads included): wall-clock, or the calling thread's "
           "CPU time with thread_cpu. For profiling.")
      .def("steps", &steps_list,
           "The steps as they run, one dict each: label ('BCONV2D+ADD+PRELU+AFFINE'), kind "
           "('op', 'conv_chain', 'epilogue_chain'), ops (file op indices, head first), output "
           "(shape), packed_bytes, inplace, work_us (estimated single-thread time), parts "
           "(threads it splits over when the pool is free).");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "qbinfer native core (bit-packed binary CNN kernels)";
  m.attr("__version__") = QBINFER_VERSION;
  m.attr("BITS_PER_WORD") = qbinfer::kBitsPerWord;
  qbinfer::bind_preprocess(m);

  m.def("bitpack", &bitpack, py::arg("x"), py::arg("thresholds") = py::none(),
        R"doc(Pack float32 values into sign bits along the last axis (channels).

x: float32 array of rank >= 1, channels last (NHWC or [..., C]). Non-contiguous
   input is copied.
thresholds: optional float32 array of shape (C,); None means all zeros.

Returns a uint64 array of shape x.shape[:-1] + ((C + 63) // 64,). Channel c is bit
c % 64 of word c // 64; bit 1 means -1, i.e. NOT (x >= threshold), so x equal to its
threshold and -0.0 pack as +1 and NaN packs as -1. Tail bits past C are 0.)doc");

  m.def(
      "build_info",
      [] {
        py::dict info;
        info["version"] = QBINFER_VERSION;
        info["compiler"] = compiler_id();
        info["target_arch"] = target_arch();
        // compiled_isas: "reference" (the portable kernels, ISA "scalar") and the SIMD
        // variants this build has; supported_isas: those this CPU and OS also run.
        py::list supported;
        for (qbinfer::Isa isa : qbinfer::supported_isas()) supported.append(qbinfer::isa_name(isa));
#if defined(QBINFER_BENCH_X86_64)
        info["compiled_isas"] = py::make_tuple("reference", "avx2", "avx512", "avx512_vpopcnt");
#else
        py::list compiled;
        compiled.append("reference");
        for (qbinfer::Isa isa : qbinfer::supported_isas()) {
          if (isa != qbinfer::Isa::kScalar) compiled.append(qbinfer::isa_name(isa));
        }
        info["compiled_isas"] = py::tuple(compiled);
#endif
        info["supported_isas"] = py::tuple(supported);
        info["avx512_vpopcntdq"] = qbinfer::cpu_has_avx512_vpopcntdq();
        try {
          const qbinfer::Isa isa = qbinfer::active_isa();
          info["active_isa"] = qbinfer::isa_name(isa);
          info["kernels"] = kernel_names(qbinfer::kernel_table_for(isa));
        } catch (const std::runtime_error& e) {
          info["active_isa"] = std::string("error: ") + e.what();
        }
        info["bits_per_word"] = qbinfer::kBitsPerWord;
        return info;
      },
      "Describe how this extension was built: version, compiler, target, kernel ISAs.");

  m.def(
      "active_isa", [] { return qbinfer::isa_name(active_isa_or_raise()); },
      "The ISA whose kernels models use: QBINFER_ISA if set (ValueError if this CPU or build "
      "cannot run it), else the best supported one. Fixed for the process.");
  m.def(
      "usable_cpus", [] { return qbinfer::usable_cpus(); },
      "CPUs this process may run on (its affinity mask: taskset and container limits count).");
  m.def(
      "supported_isas",
      [] {
        py::list names;
        for (qbinfer::Isa isa : qbinfer::supported_isas()) names.append(qbinfer::isa_name(isa));
        return names;
      },
      "ISAs this build has kernels for and this CPU runs, scalar first, best last.");
  register_exceptions(m);
  register_model(m);
}
