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
# dynamic loader and C library must come from one place:
#  - Debian's multiarch libc installed (its loader at the usual /lib path; the target's
#    GoogleTest pulls it in): plain qemu, the multiarch loader with the multiarch libc.
#  - otherwise the cross toolchain's own copy: -L /usr/<triple> for the loader, and
#    -E LD_LIBRARY_PATH=/usr/<triple>/lib so that loader takes the toolchain's libc first. -L
#    alone is not enough once any multiarch libraries are installed: the toolchain's loader
#    (glibc 2.36-8cross1) also searches /usr/lib/<triple>, loads the multiarch libc
#    (2.36-9+deb12u14) and hangs any program at its first thread.
# On a real board, configure with -DCMAKE_CROSSCOMPILING_EMULATOR= to run the programs directly.
if (NOT DEFINED CMAKE_CROSSCOMPILING_EMULATOR)
  if (EXISTS ${EMBAG_CROSS_LOADER})
    set(CMAKE_CROSSCOMPILING_EMULATOR ${EMBAG_CROSS_QEMU})
  else ()
    set(CMAKE_CROSSCOMPILING_EMULATOR ${EMBAG_CROSS_QEMU} -L /usr/${EMBAG_CROSS_TRIPLE} -E
                                      LD_LIBRARY_PATH=/usr/${EMBAG_CROSS_TRIPLE}/lib)
  endif ()
endif ()
