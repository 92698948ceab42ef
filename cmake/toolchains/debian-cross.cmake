# The part of embag's toolchain files that is the same for every Debian cross toolchain: the
# compilers named after the target triple, Debian's multiarch library folder, and user-mode QEMU
# to run the target's programs here. The including file sets CMAKE_SYSTEM_PROCESSOR and:
#   EMBAG_CROSS_TRIPLE  e.g. aarch64-linux-gnu (g++-<triple> and the multiarch folder)
#   EMBAG_CROSS_QEMU    e.g. qemu-aarch64
#   EMBAG_CROSS_LOADER  the target's dynamic loader at its usual path, e.g. /lib/ld-linux-aarch64.so.1
set(CMAKE_SYSTEM_NAME Linux)

set(CMAKE_C_COMPILER ${EMBAG_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${EMBAG_CROSS_TRIPLE}-g++)

# Debian multiarch: the target's -dev packages (GoogleTest, Google Benchmark) install their
# libraries and CMake packages under /usr/lib/<triple>; this makes find_package look there
# instead of in the host's folder.
set(CMAKE_LIBRARY_ARCHITECTURE ${EMBAG_CROSS_TRIPLE})

# Target programs (tests, the CLI, gtest's test discovery) run under user-mode QEMU. The target's
# dynamic loader and C library must come from one place: Debian's multiarch libc (at the usual
# /lib paths, installed with the target's GoogleTest) when it is there, else the cross
# toolchain's own copy (-L /usr/<triple>). Mixing the two -- the toolchain's loader with
# multiarch libraries, which it also searches -- hangs at the first thread. On a real board,
# configure with -DCMAKE_CROSSCOMPILING_EMULATOR= to run the programs directly.
if (NOT DEFINED CMAKE_CROSSCOMPILING_EMULATOR)
  if (EXISTS ${EMBAG_CROSS_LOADER})
    set(CMAKE_CROSSCOMPILING_EMULATOR ${EMBAG_CROSS_QEMU})
  else ()
    set(CMAKE_CROSSCOMPILING_EMULATOR ${EMBAG_CROSS_QEMU} -L /usr/${EMBAG_CROSS_TRIPLE})
  endif ()
endif ()
