# Cross-compiling embag for 64-bit ARM Linux with Debian's toolchain (g++-aarch64-linux-gnu).
#
# The kernels are compiled for arm-64-linux by the generators of a host build (see README,
# "Cross-compile for edge targets"); this file only says which C++ compiler builds the runtime,
# the CLI and the tests, where the target's libraries are, and how to run target programs here.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Debian multiarch: arm64 -dev packages (GoogleTest, Google Benchmark) install their libraries
# and CMake packages under /usr/lib/aarch64-linux-gnu; this makes find_package look there
# instead of in the host's /usr/lib/x86_64-linux-gnu.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Target programs (tests, the CLI, gtest's test discovery) run under user-mode QEMU. The target's
# dynamic loader and C library must come from one place: Debian's arm64 libc (multiarch, at the
# usual /lib paths, installed with the arm64 GoogleTest) when it is there, else the cross
# toolchain's sysroot (-L). Mixing the two -- the sysroot's loader with multiarch libraries, which
# it also searches -- hangs at the first thread. On a real board, pass
# -DCMAKE_CROSSCOMPILING_EMULATOR= to run the programs directly.
if (NOT DEFINED CMAKE_CROSSCOMPILING_EMULATOR)
  if (EXISTS /lib/ld-linux-aarch64.so.1)
    set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
  else ()
    set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
  endif ()
endif ()
