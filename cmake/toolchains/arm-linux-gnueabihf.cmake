# Cross-compiling embag for 32-bit ARM Linux (ARMv7-A, hard-float) with Debian's toolchain
# (g++-arm-linux-gnueabihf). Same scheme as aarch64-linux-gnu.cmake: the kernels come from a
# host build's generators, this file names the compiler, the target's libraries and the emulator.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)

set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)

# Debian multiarch: armhf -dev packages (GoogleTest, Google Benchmark) live under
# /usr/lib/arm-linux-gnueabihf.
set(CMAKE_LIBRARY_ARCHITECTURE arm-linux-gnueabihf)

# Target programs run under qemu-arm. As for aarch64, the loader and the C library must come from
# one place: Debian's armhf libc (multiarch) when it is installed, else the toolchain's sysroot.
if (NOT DEFINED CMAKE_CROSSCOMPILING_EMULATOR)
  if (EXISTS /lib/ld-linux-armhf.so.3)
    set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm)
  else ()
    set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm -L /usr/arm-linux-gnueabihf)
  endif ()
endif ()
