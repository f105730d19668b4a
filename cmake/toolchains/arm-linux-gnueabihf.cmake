# Cross-compiling qbinfer for 32-bit Arm Linux (Raspberry Pi OS 32-bit, Debian armhf) with
# Debian's cross toolchain (apt-get install g++-arm-linux-gnueabihf):
#
#   cmake -S . -B build/cross-armv7 \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/arm-linux-gnueabihf.cmake \
#         -DQBINFER_BUILD_PYTHON=OFF -DQBINFER_BUILD_TOOLS=ON
#
# ARMv7-A, hard-float ABI: what Raspberry Pi OS 32-bit runs on a Pi 2 v1.1 and newer (a Pi 3/4/5
# in 32-bit mode). The baseline is Debian armhf's (VFPv3-D16, no NEON), so the build also runs on
# an ARMv7 CPU without NEON; only the *_neon.cc kernel files are compiled with
# -mfpu=neon-vfpv4 (CMakeLists.txt) and picked at run time when HWCAP has NEON and VFPv4
# (csrc/base/cpu_features.cc). They give the AArch64 NEON results bit for bit: ARMv7 NEON
# flushes denormals, so csrc/kernels/simd/neon_compat.h redoes the lanes it touches on VFP.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)

set(QBINFER_CROSS_PREFIX "arm-linux-gnueabihf-" CACHE STRING "Prefix of the cross compilers")
set(CMAKE_C_COMPILER "${QBINFER_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${QBINFER_CROSS_PREFIX}g++")

# The _INIT variables seed CMAKE_<LANG>_FLAGS once, so a user's -DCMAKE_CXX_FLAGS=... adds to
# them rather than dropping the target description.
set(QBINFER_ARMV7_FLAGS "-march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard")
set(CMAKE_C_FLAGS_INIT "${QBINFER_ARMV7_FLAGS}")
set(CMAKE_CXX_FLAGS_INIT "${QBINFER_ARMV7_FLAGS}")

set(QBINFER_CROSS_SYSROOT "/usr/arm-linux-gnueabihf" CACHE PATH
    "Where the target's libc and libstdc++ live (qemu's -L)")
set(CMAKE_FIND_ROOT_PATH "${QBINFER_CROSS_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(QBINFER_QEMU_ARM NAMES qemu-arm qemu-arm-static)
if(QBINFER_QEMU_ARM)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${QBINFER_QEMU_ARM};-L;${QBINFER_CROSS_SYSROOT}")
endif()
