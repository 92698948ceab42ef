# `cmake --install`: a relocatable prefix that other CMake projects find with
# find_package(embag) and other build systems with pkg-config.
#
#   include/embag/            the public headers
#   lib/libembag.a            the runtime (validation, dispatch, threads)
#   lib/libembag_kernels.a    every compiled kernel variant
#   lib/libembag_halide_runtime.a  the one Halide runtime the kernels share
#   lib/cmake/embag/          embagConfig.cmake (imported target embag::embag) + version file
#   lib/pkgconfig/embag.pc
#   bin/embag                 the command-line program
#
# The package describes its imported targets itself (cmake/embagConfig.cmake.in) instead of
# exporting the build's targets: the build links the Halide runtime through Halide's own CMake
# targets, which a consumer neither has nor needs.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS embag embag_kernels embag_halide_runtime
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/embag DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if (TARGET embag_cli)
  install(TARGETS embag_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif ()

set(EMBAG_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/embag)
# With CUDA kernels the runtime carries CUB's code, which needs the static CUDA runtime: the
# package asks for the CUDA toolkit (CMake) or names its library (pkg-config).
if (EMBAG_GPU_ISAS MATCHES "cuda")
  set(EMBAG_HAS_CUDA ON)
  get_filename_component(cudart_dir "${CUDA_cudart_static_LIBRARY}" DIRECTORY)
  set(EMBAG_PC_CUDA_LIBS "-L${cudart_dir} -lcudart_static -lrt")
else ()
  set(EMBAG_HAS_CUDA OFF)
  set(EMBAG_PC_CUDA_LIBS "")
endif ()
configure_package_config_file(
  cmake/embagConfig.cmake.in "${PROJECT_BINARY_DIR}/package/embagConfig.cmake"
  INSTALL_DESTINATION ${EMBAG_CMAKE_INSTALL_DIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR)
# The version file also refuses a package built for another pointer size (a 32-bit build).
write_basic_package_version_file("${PROJECT_BINARY_DIR}/package/embagConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/package/embagConfig.cmake"
              "${PROJECT_BINARY_DIR}/package/embagConfigVersion.cmake"
        DESTINATION ${EMBAG_CMAKE_INSTALL_DIR})

# pkg-config: the prefix is found from the .pc file's own place, so the tree can be moved.
file(RELATIVE_PATH EMBAG_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" EMBAG_PC_TO_PREFIX "${EMBAG_PC_TO_PREFIX}")
configure_file(cmake/embag.pc.in "${PROJECT_BINARY_DIR}/package/embag.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/package/embag.pc"
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
