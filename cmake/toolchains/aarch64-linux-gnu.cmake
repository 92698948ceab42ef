# Cross-compiling embag for 64-bit ARM Linux with Debian's toolchain (g++-aarch64-linux-gnu):
#   cmake --preset aarch64   (or -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake)
#
# The kernels are compiled for arm-64-linux by the generators of a host build (see
# docs/cross-compiling.md); this file only says which C++ compiler builds the runtime,
# the CLI and the tests, where the target's libraries are, and how to run target programs here.
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(EMBAG_CROSS_TRIPLE aarch64-linux-gnu)
set(EMBAG_CROSS_QEMU qemu-aarch64)
set(EMBAG_CROSS_LOADER /lib/ld-linux-aarch64.so.1)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
