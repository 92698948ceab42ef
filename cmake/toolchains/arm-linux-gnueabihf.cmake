# Cross-compiling embag for 32-bit ARM Linux (ARMv7-A, hard-float) with Debian's toolchain
# (g++-arm-linux-gnueabihf):
#   cmake --preset armv7   (or -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/arm-linux-gnueabihf.cmake)
#
# Same scheme as aarch64-linux-gnu.cmake: the kernels (arm-32-linux) come from a host build's
# generators; this file names the compiler, the target's libraries and the emulator.
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(EMBAG_CROSS_TRIPLE arm-linux-gnueabihf)
set(EMBAG_CROSS_QEMU qemu-arm)
set(EMBAG_CROSS_LOADER /lib/ld-linux-armhf.so.3)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
