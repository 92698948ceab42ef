# The kernel variant table: every Halide library embag compiles, expanded from a few lists.
#
# A variant is one generator run with fixed GeneratorParams for one target. Its name encodes its
# configuration — embag_<pipeline>[_<mode>]_<weight>[_<index>]_<isa> — and the same name is the
# C symbol, the object file, the header and the row in the runtime's registry, which is
# generated here as embag_kernel_table.inc so the registry can never disagree with the build.
#
# All kernels go into one archive, embag_kernels, beside the one Halide runtime they share
# (embag_halide_runtime); the per-variant targets Halide's CMake helpers create are only the
# steps that run the generator.
#
# To add an ISA: add a row to the ISA table below (name, Halide target, registry enum), a value
# to the Isa enum in include/embag/embag.h and a predicate in runtime/cpu_features.cpp. To retune:
# change the PARAMS passed to a pipeline.

# ISA table: embag name -> explicit Halide target (never `host`) and runtime enum. The target's
# first three fields (arch-bits-os) are the platform the kernels link into: every ISA of one
# build must share it, and it must be the platform CMake compiles the runtime for.
set(EMBAG_ISA_TARGET_avx512 "x86-64-linux-avx512_skylake")
set(EMBAG_ISA_ENUM_avx512 "kAvx512")
set(EMBAG_ISA_TARGET_avx2 "x86-64-linux-avx-avx2-fma-f16c-sse41")
set(EMBAG_ISA_ENUM_avx2 "kAvx2")
set(EMBAG_ISA_TARGET_sse41 "x86-64-linux-sse41")
set(EMBAG_ISA_ENUM_sse41 "kSse41")
# ARMv8-A: Advanced SIMD (NEON) is part of the base architecture, so the plain target runs on
# every 64-bit ARM Linux board (Cortex-A53 and up).
set(EMBAG_ISA_TARGET_neon "arm-64-linux")
set(EMBAG_ISA_ENUM_neon "kNeon")
# ARMv7-A with NEON and hard-float calling convention (Halide's arm-32-linux: VFPv3 + NEON, tuned
# for Cortex-A9), for older 32-bit boards.
set(EMBAG_ISA_TARGET_armv7 "arm-32-linux")
set(EMBAG_ISA_ENUM_armv7 "kArmv7")
set(EMBAG_KNOWN_ISAS avx512 avx2 sse41 neon armv7)

# GPU ISAs: the same generators with their GPU schedules. The host part of a GPU kernel (which
# launches it) is code for the build's platform, so the target is that platform plus the GPU
# API; EMBAG_ISA_FEATURES_<isa> is appended to it below.
#   cuda_sm86 / cuda_sm80: PTX for compute capability 8.6 (A10, RTX 30xx, and every newer GPU,
#     whose driver compiles the PTX when a context first loads it) and 8.0 (A100). Halide 21
#     knows no capability above 8.6.
#   opencl: OpenCL C with float64 (cl_khr_fp64). Runs the GPU schedules on any OpenCL device;
#     the tests run it on POCL, a CPU OpenCL driver, which is how the GPU schedules are tested
#     on machines without a GPU.
set(EMBAG_ISA_FEATURES_cuda_sm86 cuda cuda_capability_86)
set(EMBAG_ISA_ENUM_cuda_sm86 "kCudaSm86")
set(EMBAG_ISA_FEATURES_cuda_sm80 cuda cuda_capability_80)
set(EMBAG_ISA_ENUM_cuda_sm80 "kCudaSm80")
set(EMBAG_ISA_FEATURES_opencl opencl cl_doubles)
set(EMBAG_ISA_ENUM_opencl "kOpenCL")
set(EMBAG_KNOWN_GPU_ISAS cuda_sm86 cuda_sm80 opencl)

# Element types: short name used in variant names -> Halide type name -> runtime enum.
set(EMBAG_WEIGHT_TYPES f32 f64 f16 bf16)
set(EMBAG_INDEX_TYPES i32 i64)
set(EMBAG_HALIDE_TYPE_f32 float32)
set(EMBAG_HALIDE_TYPE_f64 float64)
set(EMBAG_HALIDE_TYPE_f16 float16)
set(EMBAG_HALIDE_TYPE_bf16 bfloat16)
set(EMBAG_HALIDE_TYPE_i32 int32)
set(EMBAG_HALIDE_TYPE_i64 int64)
set(EMBAG_DTYPE_ENUM_f32 kFloat32)
set(EMBAG_DTYPE_ENUM_f64 kFloat64)
set(EMBAG_DTYPE_ENUM_f16 kFloat16)
set(EMBAG_DTYPE_ENUM_bf16 kBFloat16)
set(EMBAG_DTYPE_ENUM_i32 kInt32)
set(EMBAG_DTYPE_ENUM_i64 kInt64)
set(EMBAG_POOLING_ENUM_sum kSum)
set(EMBAG_POOLING_ENUM_wsum kWeightedSum)
set(EMBAG_POOLING_ENUM_mean kMean)
set(EMBAG_POOLING_ENUM_max kMax)
set(EMBAG_POOLING_ENUM_max_values kMaxValues)
# Quantized-table codecs (QuantCodec in generators/kernel_enums.h): what a quantized forward kernel
# decodes; "none" is every float-table kernel. "f8" serves the three 8-bit float formats (which one
# is a run-time argument).
set(EMBAG_QUANT_CODECS u8f32 u8f16 u4f16 u2f16 f8)
set(EMBAG_CODEC_ENUM_none kNone)
set(EMBAG_CODEC_ENUM_u8f32 kU8F32)
set(EMBAG_CODEC_ENUM_u8f16 kU8F16)
set(EMBAG_CODEC_ENUM_u4f16 kU4F16)
set(EMBAG_CODEC_ENUM_u2f16 kU2F16)
set(EMBAG_CODEC_ENUM_f8 kF8)

# Forward pooling modes; "wsum" is sum with per_sample_weights (a separate kernel, so plain sum
# carries no multiply); "max_values" is max without the argmax output, for calls that do not ask
# for it (CPU ISAs only: GPU calls write the argmax into scratch).
set(EMBAG_FORWARD_MODES sum wsum mean max max_values)

set(EMBAG_CMAKE_DIR "${CMAKE_CURRENT_LIST_DIR}")

# The cache hint of the forward kernels' software prefetches (cmake/EmbagPrefetchHint.cmake):
# t0 (keep the line in every cache level, as FBGEMM and the gather loop do) or nta (Halide's own
# non-temporal hint, for comparison).
set(EMBAG_PREFETCH_HINT "t0" CACHE STRING "Prefetch hint of the forward kernels: t0 or nta")
set_property(CACHE EMBAG_PREFETCH_HINT PROPERTY STRINGS t0 nta)
if (NOT EMBAG_PREFETCH_HINT MATCHES "^(t0|nta)$")
  message(FATAL_ERROR "EMBAG_PREFETCH_HINT must be t0 or nta, not '${EMBAG_PREFETCH_HINT}'")
endif ()

# Schedule knobs (GeneratorParams) per forward mode and ISA, as "name=value" lists: the place to
# retune. EMBAG_FORWARD_PARAMS_<mode> applies to every ISA, EMBAG_FORWARD_PARAMS_<mode>_<isa> to
# one; both may be set on the CMake command line. See generators/forward_generator.cpp.
foreach (mode IN LISTS EMBAG_FORWARD_MODES)
  set(EMBAG_FORWARD_PARAMS_${mode} "" CACHE STRING "Extra GeneratorParams for ${mode} kernels")
endforeach ()

if (NOT EMBAG_ISAS)
  message(FATAL_ERROR "EMBAG_ISAS is empty: at least one ISA must be compiled")
endif ()
set(EMBAG_PLATFORM "")
foreach (isa IN LISTS EMBAG_ISAS)
  if (NOT DEFINED EMBAG_ISA_TARGET_${isa})
    list(JOIN EMBAG_KNOWN_ISAS ", " known)
    message(FATAL_ERROR "EMBAG_ISAS: unknown ISA '${isa}' (known: ${known})")
  endif ()
  string(REGEX MATCH "^[^-]+-[^-]+-[^-]+" platform "${EMBAG_ISA_TARGET_${isa}}")
  if (NOT platform IN_LIST Halide_CMAKE_TARGET)
    message(FATAL_ERROR
            "EMBAG_ISAS: '${isa}' compiles for ${platform}, but this build compiles for "
            "${Halide_CMAKE_TARGET} (CMAKE_SYSTEM_PROCESSOR=${CMAKE_SYSTEM_PROCESSOR}). Pick the "
            "ISAs of that platform, or cross-compile with a toolchain file (see README).")
  endif ()
  set(EMBAG_PLATFORM "${platform}")
endforeach ()

# A tuning file from embag-tune (cmake/EmbagTuning.cmake reads and checks it): its kernels are
# built with the schedule parameters it chose, on its ISA; everything else keeps the defaults.
set(EMBAG_TUNING_FILE "" CACHE FILEPATH
    "Tuning file written by embag-tune (make tune): build its kernels with its schedules")
set(EMBAG_TUNED_ISA "")
set(EMBAG_TUNED_KERNELS "")
if (EMBAG_TUNING_FILE)
  include(${CMAKE_CURRENT_LIST_DIR}/EmbagTuning.cmake)
  embag_read_tuning_file(FILE "${EMBAG_TUNING_FILE}" ISAS ${EMBAG_ISAS}
                         EMBAG_VERSION "${PROJECT_VERSION}" HALIDE_VERSION "${EMBAG_HALIDE_VERSION}"
                         MODES ${EMBAG_FORWARD_MODES} WEIGHTS ${EMBAG_WEIGHT_TYPES}
                         INDICES ${EMBAG_INDEX_TYPES})
  # Editing the file reconfigures, so the kernels follow it.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${EMBAG_TUNING_FILE}")
  list(JOIN EMBAG_TUNED_KERNELS ", " tuned_text)
  message(STATUS "embag: ${EMBAG_TUNED_ISA} kernels tuned by ${EMBAG_TUNING_FILE} "
                 "(on ${EMBAG_TUNED_CPU}): ${tuned_text}")
  # A different CPU is only worth a warning: the build host is often not where the kernels run.
  if (NOT CMAKE_CROSSCOMPILING AND EXISTS /proc/cpuinfo)
    file(STRINGS /proc/cpuinfo host_cpu REGEX "^model name" LIMIT_COUNT 1)
    string(REGEX REPLACE "^model name[ \t]*:[ \t]*" "" host_cpu "${host_cpu}")
    if (host_cpu AND NOT host_cpu STREQUAL EMBAG_TUNED_CPU)
      message(WARNING "EMBAG_TUNING_FILE was tuned on '${EMBAG_TUNED_CPU}', this is "
                      "'${host_cpu}': fine if the kernels will run on the tuned machine")
    endif ()
  endif ()
endif ()

# GPU ISAs use the platform of the CPU ISAs.
foreach (isa IN LISTS EMBAG_GPU_ISAS)
  if (NOT isa IN_LIST EMBAG_KNOWN_GPU_ISAS)
    list(JOIN EMBAG_KNOWN_GPU_ISAS ", " known)
    message(FATAL_ERROR "EMBAG_GPU_ISAS: unknown GPU ISA '${isa}' (known: ${known})")
  endif ()
  set(EMBAG_ISA_TARGET_${isa} "${EMBAG_PLATFORM}")
endforeach ()

# Features every kernel gets: user_context, so each call passes its own context (where Halide
# reports errors, which thread count, which GPU stream) instead of relying on process-wide
# state; and 64-bit addressing so tables over 2^31 elements work (on 64-bit platforms; Halide
# ignores it on 32-bit ones, where no table can be that large, so it is left out of their
# target strings).
set(EMBAG_KERNEL_FEATURES user_context)
if (NOT EMBAG_PLATFORM MATCHES "-32-")
  list(APPEND EMBAG_KERNEL_FEATURES large_buffers)
endif ()
if (EMBAG_CHECK_PROMISES)
  list(APPEND EMBAG_KERNEL_FEATURES check_unsafe_promises)
endif ()

# One Halide runtime shared by every kernel: one thread pool, one set of runtime symbols.
add_halide_runtime(embag_halide_runtime TARGETS ${EMBAG_PLATFORM})

set(EMBAG_KERNEL_LIBRARIES "")
set(EMBAG_KERNEL_OBJECTS "")
set(EMBAG_KERNEL_TABLE "")
set(EMBAG_KERNEL_HEADERS "")

# Adds one kernel and its registry row: {name, pipeline, pooling, weight dtype, index dtype,
# offsets dtype, ISA, target, entry point, metadata, schedule, schedule source, tasks per
# thread, D min, D max, table class}. POOLING / WEIGHT / INDEX / OFFSETS are omitted where the pipeline has no
# such dimension (the row then says std::nullopt). The runtime calls every kernel through its
# uniform `_argv` entry point and binds arguments by the names its `_metadata` lists. SCHEDULE
# is the schedule parameters passed beyond the generator's defaults (for `embag info`), SOURCE
# where they came from, TASKS_PER_THREAD the tuned parallel grain (0: the runtime's default),
# DIM_MIN / DIM_MAX the D range the row serves (0 0: every D; a tuning file with D buckets),
# TABLE_CLASS the tables it serves (kAny, kCacheResident or kMemoryResident: see TableClass in
# generators/kernel_enums.h). PREFETCHES marks a kernel whose code may hold software prefetches:
# on 64-bit x86 and ARM it is assembled from Halide's assembly with EMBAG_PREFETCH_HINT's hint
# (cmake/EmbagPrefetchHint.cmake says why).
function(embag_add_kernel NAME)
  cmake_parse_arguments(
    ARG "PREFETCHES"
    "GENERATOR;ISA;PIPELINE;POOLING;WEIGHT;INDEX;OFFSETS;SCHEDULE;SOURCE;TASKS_PER_THREAD;DIM_MIN;DIM_MAX;TABLE_CLASS;CODEC"
    "PARAMS" ${ARGN})
  if (NOT ARG_SOURCE)
    set(ARG_SOURCE "default")
  endif ()
  if (NOT ARG_TABLE_CLASS)
    set(ARG_TABLE_CLASS kAny)
  endif ()
  if (NOT ARG_CODEC)
    set(ARG_CODEC none)
  endif ()
  set(extra_outputs "")
  string(REGEX MATCH "^[^-]+-[^-]+" arch "${EMBAG_ISA_TARGET_${ARG_ISA}}")
  set(rewrite_hint OFF)
  if (ARG_PREFETCHES AND arch MATCHES "^(x86-64|arm-64)$" AND NOT ARG_ISA IN_LIST EMBAG_GPU_ISAS)
    set(rewrite_hint ON)
    list(APPEND extra_outputs ASSEMBLY assembly)
  endif ()
  foreach (number IN ITEMS TASKS_PER_THREAD DIM_MIN DIM_MAX)
    if (NOT ARG_${number})
      set(ARG_${number} 0)
    endif ()
  endforeach ()
  if (EMBAG_EMIT_STMT)
    list(APPEND extra_outputs STMT ${NAME}_stmt)
  endif ()
  set(features ${EMBAG_KERNEL_FEATURES} ${EMBAG_ISA_FEATURES_${ARG_ISA}})
  add_halide_library(${NAME}
                     FROM embag_generators
                     GENERATOR ${ARG_GENERATOR}
                     TARGETS ${EMBAG_ISA_TARGET_${ARG_ISA}}
                     FEATURES ${features}
                     USE_RUNTIME embag_halide_runtime
                     PARAMS ${ARG_PARAMS}
                     ${extra_outputs})
  # The platform check above keeps Halide on its "compile for the CMake target" path, where the
  # library is one object file; that object goes into embag_kernels.
  get_target_property(object ${NAME} SOURCES)
  if (NOT object MATCHES "\\.o$")
    message(FATAL_ERROR "${NAME}: expected Halide to produce one object file, got '${object}'")
  endif ()
  if (rewrite_hint)
    # The object that goes into embag_kernels is assembled from Halide's assembly with the hint
    # set; Halide's own object is not used.
    set(hinted "${CMAKE_CURRENT_BINARY_DIR}/${NAME}.prefetch_${EMBAG_PREFETCH_HINT}.s")
    set(object "${CMAKE_CURRENT_BINARY_DIR}/${NAME}.prefetch_${EMBAG_PREFETCH_HINT}.o")
    add_custom_command(
      OUTPUT "${object}"
      COMMAND ${CMAKE_COMMAND} -DIN=${assembly} -DOUT=${hinted} -DARCH=${arch}
              -DHINT=${EMBAG_PREFETCH_HINT} -P ${EMBAG_CMAKE_DIR}/EmbagPrefetchHint.cmake
      COMMAND ${CMAKE_C_COMPILER} -c -x assembler "${hinted}" -o "${object}"
      DEPENDS "${assembly}" ${EMBAG_CMAKE_DIR}/EmbagPrefetchHint.cmake
      COMMENT "Assembling ${NAME} with ${EMBAG_PREFETCH_HINT} prefetches"
      VERBATIM)
  endif ()
  set_target_properties(${NAME} PROPERTIES EXCLUDE_FROM_ALL ON)
  list(JOIN features "-" feature_text)
  set(target "${EMBAG_ISA_TARGET_${ARG_ISA}}-${feature_text}")
  foreach (dim IN ITEMS POOLING WEIGHT INDEX OFFSETS)
    set(${dim}_cell "std::nullopt")
  endforeach ()
  if (ARG_POOLING)
    set(POOLING_cell "Pooling::${EMBAG_POOLING_ENUM_${ARG_POOLING}}")
  endif ()
  if (ARG_WEIGHT)
    set(WEIGHT_cell "DType::${EMBAG_DTYPE_ENUM_${ARG_WEIGHT}}")
  endif ()
  if (ARG_INDEX)
    set(INDEX_cell "DType::${EMBAG_DTYPE_ENUM_${ARG_INDEX}}")
  endif ()
  if (ARG_OFFSETS)
    set(OFFSETS_cell "DType::${EMBAG_DTYPE_ENUM_${ARG_OFFSETS}}")
  endif ()
  set(EMBAG_KERNEL_LIBRARIES ${EMBAG_KERNEL_LIBRARIES} ${NAME} PARENT_SCOPE)
  set(EMBAG_KERNEL_OBJECTS ${EMBAG_KERNEL_OBJECTS} ${object} PARENT_SCOPE)
  set(EMBAG_KERNEL_HEADERS "${EMBAG_KERNEL_HEADERS}#include \"${NAME}.h\"\n" PARENT_SCOPE)
  set(EMBAG_KERNEL_TABLE
      "${EMBAG_KERNEL_TABLE}{\"${NAME}\", Pipeline::${ARG_PIPELINE}, ${POOLING_cell}, ${WEIGHT_cell}, ${INDEX_cell}, ${OFFSETS_cell}, Isa::${EMBAG_ISA_ENUM_${ARG_ISA}}, \"${target}\", &${NAME}_argv, &${NAME}_metadata, \"${ARG_SCHEDULE}\", \"${ARG_SOURCE}\", ${ARG_TASKS_PER_THREAD}, ${ARG_DIM_MIN}, ${ARG_DIM_MAX}, TableClass::${ARG_TABLE_CLASS}, QuantCodec::${EMBAG_CODEC_ENUM_${ARG_CODEC}}},\n"
      PARENT_SCOPE)
endfunction()

# The tuning file's schedule for backward kernel unit UNIT (backward_rows_<mode>_<weight>,
# dense_scatter_<mode>_<weight>[_<index>]) on this ISA, in the caller's `tuned_params`,
# `tuned_schedule` and `tuned_source` (empty, empty, "default" when the file has none). Backward
# kernels have one schedule for every D and table (embag-tune writes one bucket).
macro(embag_tuned_backward unit)
  set(tuned_params "")
  set(tuned_schedule "")
  set(tuned_source "default")
  if (isa STREQUAL EMBAG_TUNED_ISA AND "${unit}" IN_LIST EMBAG_TUNED_KERNELS)
    set(tuned_params ${EMBAG_TUNED_PARAMS_${unit}_0})
    list(JOIN tuned_params " " tuned_schedule)
    set(tuned_source "tuning file")
    if (NOT tuned_params)
      set(tuned_source "tuning file (default kept)")
    endif ()
  endif ()
endmacro()

foreach (isa IN LISTS EMBAG_ISAS EMBAG_GPU_ISAS)
  foreach (w IN LISTS EMBAG_WEIGHT_TYPES)
    foreach (i IN LISTS EMBAG_INDEX_TYPES)
      foreach (mode IN LISTS EMBAG_FORWARD_MODES)
        if (mode STREQUAL "max_values" AND isa IN_LIST EMBAG_GPU_ISAS)
          continue()
        endif ()
        # Schedule parameters: the tuning file's first, then the cache variables' (the generator
        # takes the last value of a parameter given twice, so an explicit -D wins). A tuning file
        # may give a kernel one schedule per D bucket: one kernel per bucket, the first under the
        # plain name, the others with _d<min> before the ISA; the registry picks by D.
        #
        # CPU kernels come in two table classes (TableClass in generators/kernel_enums.h): the
        # default schedule for tables past the caches, and one without software prefetch for
        # tables that stay in them. A tuning file tunes each class on its own workloads (units
        # <kernel>_memory and <kernel>_cache; a class it does not tune keeps its default kernel
        # here), or -- files whose workloads were not classed -- one schedule for every table
        # (unit <kernel>): one bucket then keeps both classes with the tuned parameters on top of
        # each class's own, several buckets give kAny rows. Each plan entry is class|unit|params
        # of the class's default ("-": untuned, "none": no class parameters).
        set(tuned "${mode}_${w}_${i}")
        set(this_isa_tuned OFF)
        if (isa STREQUAL EMBAG_TUNED_ISA)
          set(this_isa_tuned ON)
        endif ()
        if (isa IN_LIST EMBAG_GPU_ISAS)
          set(plan "kAny|-|none")
        elseif (this_isa_tuned AND tuned IN_LIST EMBAG_TUNED_KERNELS)
          if (EMBAG_TUNED_BUCKETS_${tuned} STREQUAL "0")
            set(plan "kMemoryResident|${tuned}|none" "kCacheResident|${tuned}|prefetch_distance=0")
          else ()
            set(plan "kAny|${tuned}|none")
          endif ()
        else ()
          set(plan "")
          foreach (pair IN ITEMS "kMemoryResident;memory;none"
                                 "kCacheResident;cache;prefetch_distance=0")
            list(GET pair 0 table_class)
            list(GET pair 1 suffix)
            list(GET pair 2 defaults)
            set(unit "-")
            if (this_isa_tuned AND "${tuned}_${suffix}" IN_LIST EMBAG_TUNED_KERNELS)
              set(unit "${tuned}_${suffix}")
            endif ()
            list(APPEND plan "${table_class}|${unit}|${defaults}")
          endforeach ()
        endif ()
        foreach (entry IN LISTS plan)
        string(REPLACE "|" ";" entry "${entry}")
        list(GET entry 0 table_class)
        list(GET entry 1 unit)
        list(GET entry 2 class_defaults)
        set(buckets 0)
        if (NOT unit STREQUAL "-")
          set(buckets ${EMBAG_TUNED_BUCKETS_${unit}})
        endif ()
        list(LENGTH buckets nbuckets)
        # A per-class unit's parameters are complete (embag-tune timed exactly them against the
        # class's default), so the class's own defaults are not put before them.
        set(per_class_unit OFF)
        if (unit MATCHES "_(cache|memory)$")
          set(per_class_unit ON)
        endif ()
        foreach (bucket IN LISTS buckets)
          set(tuned_params "")
          set(tasks_per_thread 0)
          set(source "default")
          set(dim_min 0)
          set(dim_max 0)
          set(name embag_forward_${mode}_${w}_${i})
          set(class_params "")
          set(prefetches PREFETCHES)
          if (table_class STREQUAL "kCacheResident")
            set(name ${name}_cache)
            set(class_params prefetch_distance=0)
            set(prefetches "")
          elseif (isa IN_LIST EMBAG_GPU_ISAS)
            set(prefetches "")
          endif ()
          if (NOT unit STREQUAL "-")
            set(tuned_params ${EMBAG_TUNED_PARAMS_${unit}_${bucket}})
            set(tasks_per_thread ${EMBAG_TUNED_TPT_${unit}_${bucket}})
            set(source "tuning file")
            set(kept_params "")
            if (per_class_unit)
              set(class_params "")
              if (NOT class_defaults STREQUAL "none")
                set(kept_params ${class_defaults})
              endif ()
              # (a tuned cache-resident schedule may prefetch: assemble it with the hint)
              if (NOT isa IN_LIST EMBAG_GPU_ISAS)
                set(prefetches PREFETCHES)
              endif ()
            endif ()
            if ("${tuned_params}" STREQUAL "${kept_params}" AND tasks_per_thread EQUAL 4)
              set(source "tuning file (default kept)")
              set(tasks_per_thread 0)
            endif ()
            if (nbuckets GREATER 1)
              set(dim_min ${EMBAG_TUNED_DIM_MIN_${unit}_${bucket}})
              set(dim_max ${EMBAG_TUNED_DIM_MAX_${unit}_${bucket}})
              if (bucket GREATER 0)
                set(name ${name}_d${dim_min})
              endif ()
            endif ()
          endif ()
          set(name ${name}_${isa})
          set(cache_params ${EMBAG_FORWARD_PARAMS_${mode}} ${EMBAG_FORWARD_PARAMS_${mode}_${isa}})
          if (cache_params)
            set(source "${source}, cmake")
            string(REPLACE "default, " "" source "${source}")
          endif ()
          set(schedule ${class_params} ${tuned_params} ${cache_params})
          if (tasks_per_thread GREATER 0)
            list(APPEND schedule "tasks_per_thread=${tasks_per_thread}")
          endif ()
          if (dim_max GREATER 0)
            list(APPEND schedule "(D ${dim_min}-${dim_max})")
          endif ()
          list(JOIN schedule " " schedule)
          embag_add_kernel(${name}
                           GENERATOR embag_forward
                           ISA ${isa}
                           PIPELINE kForward POOLING ${mode} WEIGHT ${w} INDEX ${i}
                           SCHEDULE "${schedule}" SOURCE "${source}"
                           TASKS_PER_THREAD ${tasks_per_thread}
                           DIM_MIN ${dim_min} DIM_MAX ${dim_max}
                           TABLE_CLASS ${table_class} ${prefetches}
                           PARAMS mode=${mode}
                                  weight_type=${EMBAG_HALIDE_TYPE_${w}}
                                  index_type=${EMBAG_HALIDE_TYPE_${i}}
                                  ${class_params}
                                  ${tuned_params}
                                  ${EMBAG_FORWARD_PARAMS_${mode}}
                                  ${EMBAG_FORWARD_PARAMS_${mode}_${isa}})
        endforeach ()
        endforeach ()
      endforeach ()
    endforeach ()
    embag_add_kernel(embag_renorm_${w}_${isa}
                     GENERATOR embag_renorm
                     ISA ${isa}
                     PIPELINE kRenorm WEIGHT ${w}
                     PARAMS weight_type=${EMBAG_HALIDE_TYPE_${w}})
    # Backward: per-row folds (no index dtype: the runtime hands them sorted int32 positions)
    # and the per_sample_weights gradient.
    foreach (mode IN ITEMS sum wsum mean max)
      embag_tuned_backward(backward_rows_${mode}_${w})
      embag_add_kernel(embag_backward_rows_${mode}_${w}_${isa}
                       GENERATOR embag_backward_rows
                       ISA ${isa}
                       PIPELINE kBackwardRows POOLING ${mode} WEIGHT ${w}
                       SCHEDULE "${tuned_schedule}" SOURCE "${tuned_source}"
                       PARAMS mode=${mode} weight_type=${EMBAG_HALIDE_TYPE_${w}} ${tuned_params})
    endforeach ()
    # The dense gradient in one pass (no sort): CPU ISAs, tables whose accumulator is their own
    # type (see generators/backward_generator.cpp). Max reads the argmax, not the indices.
    if (w MATCHES "^f(32|64)$" AND NOT isa IN_LIST EMBAG_GPU_ISAS)
      embag_tuned_backward(dense_scatter_max_${w})
      embag_add_kernel(embag_dense_scatter_max_${w}_${isa}
                       GENERATOR embag_dense_scatter
                       ISA ${isa}
                       PIPELINE kDenseScatter POOLING max WEIGHT ${w}
                       SCHEDULE "${tuned_schedule}" SOURCE "${tuned_source}"
                       PARAMS mode=max weight_type=${EMBAG_HALIDE_TYPE_${w}} ${tuned_params})
      foreach (mode IN ITEMS sum wsum mean)
        foreach (i IN LISTS EMBAG_INDEX_TYPES)
          embag_tuned_backward(dense_scatter_${mode}_${w}_${i})
          embag_add_kernel(embag_dense_scatter_${mode}_${w}_${i}_${isa}
                           GENERATOR embag_dense_scatter
                           ISA ${isa}
                           PIPELINE kDenseScatter POOLING ${mode} WEIGHT ${w} INDEX ${i}
                           SCHEDULE "${tuned_schedule}" SOURCE "${tuned_source}"
                           PARAMS mode=${mode} weight_type=${EMBAG_HALIDE_TYPE_${w}}
                                  index_type=${EMBAG_HALIDE_TYPE_${i}} ${tuned_params})
        endforeach ()
      endforeach ()
    endif ()
    foreach (i IN LISTS EMBAG_INDEX_TYPES)
      embag_add_kernel(embag_psw_grad_${w}_${i}_${isa}
                       GENERATOR embag_psw_grad
                       ISA ${isa}
                       PIPELINE kPswGrad WEIGHT ${w} INDEX ${i}
                       PARAMS weight_type=${EMBAG_HALIDE_TYPE_${w}}
                              index_type=${EMBAG_HALIDE_TYPE_${i}})
    endforeach ()
  endforeach ()
endforeach ()

# Forward kernels for quantized tables (CPU ISAs; GPU calls with a quantized table are refused):
# one per codec, index dtype and mode. The layout (qparams at the end or the front) is a runtime
# argument, so PyTorch's and FBGEMM's layouts share a kernel. One table class: the rows are a
# quarter to a sixteenth of a float32 row's bytes and the schedule prefetches every line of the
# row ahead, as the memory-resident float kernels do (a cache-resident variant without prefetch is
# not compiled yet: docs/quantized.md).
foreach (isa IN LISTS EMBAG_ISAS)
  foreach (codec IN LISTS EMBAG_QUANT_CODECS)
    foreach (i IN LISTS EMBAG_INDEX_TYPES)
      foreach (mode IN LISTS EMBAG_FORWARD_MODES)
        embag_add_kernel(embag_forward_${mode}_${codec}_${i}_${isa}
                         GENERATOR embag_forward
                         ISA ${isa}
                         PIPELINE kForward POOLING ${mode} INDEX ${i} CODEC ${codec} PREFETCHES
                         PARAMS mode=${mode} codec=${codec} weight_type=float32
                                index_type=${EMBAG_HALIDE_TYPE_${i}})
      endforeach ()
    endforeach ()
  endforeach ()
endforeach ()

# GPU planning kernels (generators/plan_generator.cpp): what the CPU runtime does in C++.
foreach (isa IN LISTS EMBAG_GPU_ISAS)
  foreach (i IN LISTS EMBAG_INDEX_TYPES)
    foreach (o IN LISTS EMBAG_INDEX_TYPES)
      embag_add_kernel(embag_check_${i}_${o}_${isa}
                       GENERATOR embag_check ISA ${isa}
                       PIPELINE kCheck INDEX ${i} OFFSETS ${o}
                       PARAMS index_type=${EMBAG_HALIDE_TYPE_${i}}
                              offsets_type=${EMBAG_HALIDE_TYPE_${o}})
      embag_add_kernel(embag_layout_${i}_${o}_${isa}
                       GENERATOR embag_layout ISA ${isa}
                       PIPELINE kLayout INDEX ${i} OFFSETS ${o}
                       PARAMS index_type=${EMBAG_HALIDE_TYPE_${i}}
                              offsets_type=${EMBAG_HALIDE_TYPE_${o}})
    endforeach ()
    embag_add_kernel(embag_position_bag_${i}_${isa}
                     GENERATOR embag_position_bag ISA ${isa}
                     PIPELINE kPositionBag INDEX ${i}
                     PARAMS index_type=${EMBAG_HALIDE_TYPE_${i}})
    embag_add_kernel(embag_sort_keys_${i}_${isa}
                     GENERATOR embag_sort_keys ISA ${isa}
                     PIPELINE kSortKeys INDEX ${i}
                     PARAMS index_type=${EMBAG_HALIDE_TYPE_${i}})
    embag_add_kernel(embag_bag_count_${i}_${isa}
                     GENERATOR embag_bag_count ISA ${isa}
                     PIPELINE kBagCount INDEX ${i}
                     PARAMS index_type=${EMBAG_HALIDE_TYPE_${i}} count_type=int64)
    embag_add_kernel(embag_bag_divisor_${i}_${isa}
                     GENERATOR embag_bag_count ISA ${isa}
                     PIPELINE kBagDivisor INDEX ${i}
                     PARAMS index_type=${EMBAG_HALIDE_TYPE_${i}} count_type=int32)
  endforeach ()
  foreach (w IN LISTS EMBAG_WEIGHT_TYPES)
    embag_add_kernel(embag_scatter_rows_${w}_${isa}
                     GENERATOR embag_scatter_rows ISA ${isa}
                     PIPELINE kScatterRows WEIGHT ${w}
                     PARAMS weight_type=${EMBAG_HALIDE_TYPE_${w}} zero_fill=true masked=false)
    embag_add_kernel(embag_write_back_rows_${w}_${isa}
                     GENERATOR embag_scatter_rows ISA ${isa}
                     PIPELINE kWriteBackRows WEIGHT ${w}
                     PARAMS weight_type=${EMBAG_HALIDE_TYPE_${w}} zero_fill=false masked=true)
  endforeach ()
  # Table-batched training (generators/fused_update_generator.cpp): the fused optimizer updates,
  # for the batched calls' table dtypes (float32, float16, bfloat16).
  foreach (w IN ITEMS f32 f16 bf16)
    foreach (pair IN ITEMS "sgd;kFusedSgd" "adagrad;kFusedAdagrad"
                           "rowwise_adagrad;kFusedRowwiseAdagrad" "adam;kFusedAdam")
      list(GET pair 0 optimizer)
      list(GET pair 1 pipeline)
      embag_add_kernel(embag_fused_${optimizer}_${w}_${isa}
                       GENERATOR embag_fused_update ISA ${isa}
                       PIPELINE ${pipeline} WEIGHT ${w}
                       PARAMS optimizer=${optimizer} weight_type=${EMBAG_HALIDE_TYPE_${w}})
    endforeach ()
  endforeach ()
endforeach ()

set(EMBAG_GENERATED_DIR "${CMAKE_BINARY_DIR}/generated")
file(CONFIGURE OUTPUT "${EMBAG_GENERATED_DIR}/embag_kernel_table.inc"
     CONTENT "// Generated by cmake/EmbagKernels.cmake: one row per compiled kernel.\n// {name, pipeline, pooling, weight dtype, index dtype, offsets dtype, ISA, target, entry point,\n// metadata, schedule, schedule source, tasks per thread, D min, D max, table class, codec}\n@EMBAG_KERNEL_TABLE@"
     @ONLY)
file(CONFIGURE OUTPUT "${EMBAG_GENERATED_DIR}/embag_kernel_headers.h"
     CONTENT "// Generated by cmake/EmbagKernels.cmake: the header of every compiled kernel.\n#pragma once\n@EMBAG_KERNEL_HEADERS@"
     @ONLY)

# Every kernel in one static library. Its objects are the generator outputs above, so building it
# runs the generators; the kernels' headers (next to the objects) come with it.
add_library(embag_kernels STATIC ${EMBAG_KERNEL_OBJECTS})
set_target_properties(embag_kernels PROPERTIES LINKER_LANGUAGE CXX)
foreach (kernel IN LISTS EMBAG_KERNEL_LIBRARIES)
  add_dependencies(embag_kernels ${kernel}.update)
endforeach ()
target_include_directories(embag_kernels INTERFACE $<BUILD_INTERFACE:${CMAKE_CURRENT_BINARY_DIR}>
                                                   $<BUILD_INTERFACE:${EMBAG_GENERATED_DIR}>)
target_link_libraries(embag_kernels PUBLIC embag_halide_runtime)
