# Cross-compiling qbinfer for 64-bit Arm Linux (Raspberry Pi OS 64-bit, Debian arm64) with
# Debian's cross toolchain (apt-get install g++-aarch64-linux-gnu):
#
#   cmake -S . -B build/cross-aarch64 \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake \
#         -DQBINFER_BUILD_PYTHON=OFF -DQBINFER_BUILD_TOOLS=ON
#
# The target is baseline ARMv8-A: Advanced SIMD is part of it, and the optional extensions
# (dotprod, ...) are chosen at run time, so the binaries run on every Pi from the 3 on. Set
# QBINFER_CROSS_PREFIX to use another triplet's compilers (e.g. a vendor toolchain).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(QBINFER_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the cross compilers")
set(CMAKE_C_COMPILER "${QBINFER_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${QBINFER_CROSS_PREFIX}g++")

# Debian installs the target's libraries under /usr/aarch64-linux-gnu; search only there for
# libraries and headers (never the build machine's x86-64 ones), but run the host's programs.
set(QBINFER_CROSS_SYSROOT "/usr/aarch64-linux-gnu" CACHE PATH
    "Where the target's libc and libstdc++ live (qemu's -L)")
set(CMAKE_FIND_ROOT_PATH "${QBINFER_CROSS_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest, add_test and `cmake -E env` run target binaries through qemu-user; -L points the
# emulated dynamic loader at the target's libc. QEMU_CPU (e.g. cortex-a72, which has no
# dotprod) picks the emulated CPU from the environment.
find_program(QBINFER_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(QBINFER_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${QBINFER_QEMU_AARCH64};-L;${QBINFER_CROSS_SYSROOT}")
endif()
