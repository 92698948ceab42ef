# Reading a tuning file (written by embag-tune) at configure time, so the kernels it tuned are
# built with its schedule parameters.
#
# CMake reads the JSON itself (string(JSON), CMake >= 3.19): no converter step, no extra tool
# that would have to be built before the build can be configured. Every key the build uses is
# checked for presence and type, and every error names the file and the key, e.g.
#   EMBAG_TUNING_FILE t.json: kernels[1].params.prefetch_distance must be an integer, but is "x"
#
# A tuning file that does not match the build is refused (FATAL_ERROR), not ignored: the user
# asked for tuned kernels, and a build that silently falls back to the defaults would look tuned
# while it is not. Refused: another ISA than any this build compiles, another embag version (the
# generators' parameters may have changed meaning), another Halide version (the same schedule can
# compile differently). Only a different CPU model is a warning: the build host is often not the
# machine the kernels run on (a board tuned with --bundle, a fleet of identical servers).
#
# embag_read_tuning_file(FILE <path> ISAS <isa;...> EMBAG_VERSION <v> HALIDE_VERSION <v>
#                        MODES <mode;...> WEIGHTS <w;...> INDICES <i;...>)
# sets, in the caller's scope:
#   EMBAG_TUNED_ISA                          the file's ISA
#   EMBAG_TUNED_KERNELS                      every tuned kernel unit:
#                                              forward "<mode>_<weight>_<index>" (any table),
#                                              "<mode>_<weight>_<index>_cache" (cache-resident
#                                              tables) or ..._memory (memory-resident tables);
#                                              "backward_rows_<mode>_<weight>";
#                                              "dense_scatter_<mode>_<weight>[_<index>]"
#   EMBAG_TUNED_BUCKETS_<kernel>             its D buckets: 0 (one schedule for every D), or
#                                            0;1;... (one schedule per D range, ascending)
#   EMBAG_TUNED_PARAMS_<kernel>_<bucket>     the bucket's GeneratorParams, a list of name=value
#   EMBAG_TUNED_TPT_<kernel>_<bucket>        its tasks per thread
#   EMBAG_TUNED_DIM_MIN/MAX_<kernel>_<bucket> its D range
#   EMBAG_TUNED_GAIN_<kernel>_<bucket>       the measured geometric-mean gain
# A kernel's entries must cover every D, 1 to 2147483647, in ascending order without gaps or
# overlaps (embag-tune writes them so), so every call finds exactly one schedule. Entries:
#   pipeline     forward, backward_rows (the row fold) or dense_scatter (the dense gradient)
#   table_class  forward only, optional: "any" (the default: one schedule for every table),
#                "cache-resident" or "memory-resident" (the runtime's table-size classes; a
#                class a file does not name keeps the build's default kernels for it). A forward
#                kernel's entries are either all "any" or all per class.
#   index        forward and dense_scatter (but not its max) only: the others read no indices
# It is also a script: cmake -DFILE=... -DISAS=... -P cmake/EmbagTuning.cmake checks a file
# (the tests do), printing "tuning file OK" or the error.

# (The message may come in several quoted pieces, joined here.)
function(_embag_tuning_fail)
  string(CONCAT text ${ARGN})
  message(FATAL_ERROR "EMBAG_TUNING_FILE ${_embag_tuning_path}: ${text}")
endfunction()

# _embag_tuning_get(<out> <TYPE> <what> <json> <path...>): the value at path, of JSON type TYPE
# (STRING, NUMBER, INTEGER (a NUMBER without fraction), ARRAY, OBJECT).
function(_embag_tuning_get out type what json)
  string(JSON actual ERROR_VARIABLE error TYPE "${json}" ${ARGN})
  if (error)
    _embag_tuning_fail("${what} is missing")
  endif ()
  string(JSON value GET "${json}" ${ARGN})
  set(want "${type}")
  if (type STREQUAL "INTEGER")
    set(want "NUMBER")
  endif ()
  if (NOT actual STREQUAL want)
    set(article_STRING "a string")
    set(article_NUMBER "a number")
    set(article_INTEGER "an integer")
    set(article_ARRAY "an array")
    set(article_OBJECT "an object")
    set(article_BOOLEAN "a boolean")
    set(article_NULL "null")
    _embag_tuning_fail("${what} must be ${article_${type}}, but is ${article_${actual}}: ${value}")
  endif ()
  if (type STREQUAL "INTEGER" AND NOT value MATCHES "^-?[0-9]+$")
    _embag_tuning_fail("${what} must be an integer, but is ${value}")
  endif ()
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

function(embag_read_tuning_file)
  cmake_parse_arguments(ARG "" "FILE;EMBAG_VERSION;HALIDE_VERSION" "ISAS;MODES;WEIGHTS;INDICES"
                        ${ARGN})
  set(_embag_tuning_path "${ARG_FILE}")
  if (NOT EXISTS "${ARG_FILE}" OR IS_DIRECTORY "${ARG_FILE}")
    _embag_tuning_fail("no such file")
  endif ()
  file(READ "${ARG_FILE}" json)
  string(STRIP "${json}" json)
  if (json STREQUAL "")
    _embag_tuning_fail("the file is empty (embag-tune writes it at the end of a run: did the run "
                       "finish?)")
  endif ()
  string(JSON root_type ERROR_VARIABLE error TYPE "${json}")
  if (error)
    string(REPLACE "\n" " " error "${error}")
    _embag_tuning_fail("not valid JSON: ${error}")
  endif ()
  # (CMake's JSON reader stops after the first value; text after it is an error here.)
  if (NOT root_type STREQUAL "OBJECT" OR NOT json MATCHES "}$")
    _embag_tuning_fail("must be one JSON object, as embag-tune writes it")
  endif ()

  _embag_tuning_get(format STRING "key 'format'" "${json}" format)
  if (NOT format STREQUAL "embag-tuning")
    _embag_tuning_fail("'format' is \"${format}\", not \"embag-tuning\": not a tuning file")
  endif ()
  _embag_tuning_get(version INTEGER "key 'format_version'" "${json}" format_version)
  if (NOT version EQUAL 1)
    _embag_tuning_fail("format_version ${version} is not supported (this embag reads version 1)")
  endif ()
  _embag_tuning_get(isa STRING "key 'isa'" "${json}" isa)
  if (NOT isa IN_LIST ARG_ISAS)
    list(JOIN ARG_ISAS ", " isas)
    _embag_tuning_fail("tuned for ISA '${isa}', but this build compiles ${isas}: tune for one of "
                       "them (embag-tune --isa), or drop EMBAG_TUNING_FILE")
  endif ()
  _embag_tuning_get(embag_version STRING "key 'embag_version'" "${json}" embag_version)
  if (NOT embag_version STREQUAL ARG_EMBAG_VERSION)
    _embag_tuning_fail("made by embag ${embag_version}, but this is embag ${ARG_EMBAG_VERSION}: "
                       "the generators' parameters may differ, so retune (make tune)")
  endif ()
  _embag_tuning_get(halide_version STRING "key 'halide_version'" "${json}" halide_version)
  if (NOT halide_version STREQUAL ARG_HALIDE_VERSION)
    _embag_tuning_fail("made with Halide ${halide_version}, but this build uses Halide "
                       "${ARG_HALIDE_VERSION}: the same schedule may compile differently, so "
                       "retune (make tune)")
  endif ()
  _embag_tuning_get(cpu STRING "key 'cpu_model'" "${json}" cpu_model)

  _embag_tuning_get(kernels ARRAY "key 'kernels'" "${json}" kernels)
  string(JSON count LENGTH "${json}" kernels)
  set(tuned "")
  if (count GREATER 0)
    math(EXPR last "${count} - 1")
    foreach (k RANGE ${last})
      set(at "kernels[${k}]")
      _embag_tuning_get(pipeline STRING "${at}.pipeline" "${json}" kernels ${k} pipeline)
      if (NOT pipeline MATCHES "^(forward|backward_rows|dense_scatter)$")
        _embag_tuning_fail("${at}.pipeline is \"${pipeline}\": tuned pipelines are forward, "
                           "backward_rows and dense_scatter")
      endif ()
      foreach (dim IN ITEMS mode weight)
        _embag_tuning_get(${dim} STRING "${at}.${dim}" "${json}" kernels ${k} ${dim})
      endforeach ()
      set(has_index ON)
      if (pipeline STREQUAL "backward_rows" OR (pipeline STREQUAL "dense_scatter"
                                                 AND mode STREQUAL "max"))
        set(has_index OFF)
        set(index "")
      else ()
        _embag_tuning_get(index STRING "${at}.index" "${json}" kernels ${k} index)
      endif ()
      set(checked MODES WEIGHTS)
      if (has_index)
        list(APPEND checked INDICES)
      endif ()
      foreach (dim IN LISTS checked)
        string(TOLOWER "${dim}" key)
        string(REGEX REPLACE "s$" "" key "${key}")
        string(REPLACE "indice" "index" key "${key}")
        if (NOT ${key} IN_LIST ARG_${dim})
          list(JOIN ARG_${dim} ", " known)
          _embag_tuning_fail("${at}.${key} is \"${${key}}\" (known: ${known})")
        endif ()
      endforeach ()
      if (NOT pipeline STREQUAL "forward" AND mode STREQUAL "max_values")
        _embag_tuning_fail("${at}: ${pipeline} has no mode max_values (inference only)")
      endif ()
      set(table_class "any")
      string(JSON class_type ERROR_VARIABLE no_class TYPE "${json}" kernels ${k} table_class)
      if (NOT no_class)
        _embag_tuning_get(table_class STRING "${at}.table_class" "${json}" kernels ${k}
                          table_class)
      endif ()
      if (NOT table_class MATCHES "^(any|cache-resident|memory-resident)$")
        _embag_tuning_fail("${at}.table_class is \"${table_class}\" (known: any, "
                           "cache-resident, memory-resident)")
      endif ()
      if (NOT pipeline STREQUAL "forward" AND NOT table_class STREQUAL "any")
        _embag_tuning_fail("${at}.table_class is \"${table_class}\", but ${pipeline} kernels "
                           "serve every table (only forward kernels have table classes)")
      endif ()
      # For messages: "sum f32 i64", "sum f32 i64 (cache-resident)", "backward_rows sum f32".
      string(STRIP "${mode} ${weight} ${index}" label)
      if (NOT pipeline STREQUAL "forward")
        set(label "${pipeline} ${label}")
      elseif (NOT table_class STREQUAL "any")
        set(label "${label} (${table_class})")
      endif ()
      if (pipeline STREQUAL "forward")
        set(base "${mode}_${weight}_${index}")
        # One forward kernel is tuned either for every table or per class, not both.
        set(kind "per-class")
        if (table_class STREQUAL "any")
          set(kind "any")
        endif ()
        if (DEFINED class_kind_${base} AND NOT class_kind_${base} STREQUAL kind)
          _embag_tuning_fail("${at}: ${mode} ${weight} ${index} has entries for any table and "
                             "entries per table class: one or the other")
        endif ()
        set(class_kind_${base} "${kind}")
        set(name "${base}")
        if (table_class STREQUAL "cache-resident")
          set(name "${base}_cache")
        elseif (table_class STREQUAL "memory-resident")
          set(name "${base}_memory")
        endif ()
      elseif (has_index)
        set(name "${pipeline}_${mode}_${weight}_${index}")
      else ()
        set(name "${pipeline}_${mode}_${weight}")
      endif ()
      # D range: a kernel's entries (D buckets) must follow each other, each starting where the
      # one before ended, from 1 to kMaxDim.
      _embag_tuning_get(dim_min INTEGER "${at}.dim_min" "${json}" kernels ${k} dim_min)
      _embag_tuning_get(dim_max INTEGER "${at}.dim_max" "${json}" kernels ${k} dim_max)
      if (dim_min LESS 1 OR dim_max LESS dim_min OR dim_max GREATER 2147483647)
        _embag_tuning_fail("${at}: D range [${dim_min}, ${dim_max}] is not a range within "
                           "[1, 2147483647]")
      endif ()
      if (NOT pipeline STREQUAL "forward" AND (NOT dim_min EQUAL 1 OR NOT dim_max EQUAL 2147483647))
        _embag_tuning_fail("${at}: ${label} has D range [${dim_min}, ${dim_max}], but backward "
                           "kernels have one schedule for every D: [1, 2147483647]")
      endif ()
      if (name IN_LIST tuned)
        math(EXPR expected "${next_dim_${name}}")
        list(LENGTH buckets_${name} bucket)
        list(APPEND buckets_${name} ${bucket})
      else ()
        set(expected 1)
        set(bucket 0)
        set(buckets_${name} 0)
        list(APPEND tuned "${name}")
      endif ()
      if (NOT dim_min EQUAL expected)
        _embag_tuning_fail("${at}: ${label} D range starts at ${dim_min}, but "
                           "must start at ${expected}: a kernel's D ranges follow each other "
                           "from 1 without gaps or overlaps")
      endif ()
      math(EXPR next_dim_${name} "${dim_max} + 1")

      _embag_tuning_get(params OBJECT "${at}.params" "${json}" kernels ${k} params)
      string(JSON nparams LENGTH "${json}" kernels ${k} params)
      set(list "")
      if (nparams GREATER 0)
        math(EXPR plast "${nparams} - 1")
        foreach (p RANGE ${plast})
          string(JSON key MEMBER "${json}" kernels ${k} params ${p})
          if (NOT key MATCHES "^[a-z_][a-z0-9_]*$" OR key MATCHES "^(mode|weight_type|index_type)$")
            _embag_tuning_fail("${at}.params: '${key}' is not a schedule parameter")
          endif ()
          string(JSON type TYPE "${json}" kernels ${k} params ${key})
          if (type STREQUAL "NUMBER")
            _embag_tuning_get(value INTEGER "${at}.params.${key}" "${json}" kernels ${k} params
                              ${key})
          else ()
            _embag_tuning_get(value STRING "${at}.params.${key}" "${json}" kernels ${k} params
                              ${key})
            if (NOT value MATCHES "^[A-Za-z0-9_.]+$")
              _embag_tuning_fail("${at}.params.${key} must be a plain word, but is \"${value}\"")
            endif ()
          endif ()
          list(APPEND list "${key}=${value}")
        endforeach ()
      endif ()
      _embag_tuning_get(tpt INTEGER "${at}.tasks_per_thread" "${json}" kernels ${k}
                        tasks_per_thread)
      if (tpt LESS 1 OR tpt GREATER 1024)
        _embag_tuning_fail("${at}.tasks_per_thread must be in [1, 1024], but is ${tpt}")
      endif ()
      _embag_tuning_get(gain NUMBER "${at}.gain" "${json}" kernels ${k} gain)
      set(EMBAG_TUNED_PARAMS_${name}_${bucket} "${list}" PARENT_SCOPE)
      set(EMBAG_TUNED_TPT_${name}_${bucket} "${tpt}" PARENT_SCOPE)
      set(EMBAG_TUNED_GAIN_${name}_${bucket} "${gain}" PARENT_SCOPE)
      set(EMBAG_TUNED_DIM_MIN_${name}_${bucket} "${dim_min}" PARENT_SCOPE)
      set(EMBAG_TUNED_DIM_MAX_${name}_${bucket} "${dim_max}" PARENT_SCOPE)
    endforeach ()
  endif ()
  foreach (name IN LISTS tuned)
    if (NOT next_dim_${name} EQUAL 2147483648)
      math(EXPR last "${next_dim_${name}} - 1")
      _embag_tuning_fail("the D ranges of ${name} end at ${last}, not 2147483647: every D needs "
                         "a schedule")
    endif ()
    set(EMBAG_TUNED_BUCKETS_${name} "${buckets_${name}}" PARENT_SCOPE)
  endforeach ()
  set(EMBAG_TUNED_ISA "${isa}" PARENT_SCOPE)
  set(EMBAG_TUNED_KERNELS "${tuned}" PARENT_SCOPE)
  set(EMBAG_TUNED_CPU "${cpu}" PARENT_SCOPE)
endfunction()

# Script mode: check one file (tests/CMakeLists.txt runs this on good and broken files).
if (CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  if (NOT DEFINED ISAS)
    set(ISAS avx512 avx2 sse41)
  endif ()
  embag_read_tuning_file(FILE "${FILE}" ISAS ${ISAS} EMBAG_VERSION "${EMBAG_VERSION}"
                         HALIDE_VERSION "${HALIDE_VERSION}" MODES sum wsum mean max max_values
                         WEIGHTS f32 f64 f16 bf16 INDICES i32 i64)
  list(LENGTH EMBAG_TUNED_KERNELS n)
  set(bucketed "")
  foreach (name IN LISTS EMBAG_TUNED_KERNELS)
    list(LENGTH EMBAG_TUNED_BUCKETS_${name} nb)
    if (nb GREATER 1)
      string(APPEND bucketed " ${name}:${nb}")
    endif ()
  endforeach ()
  message("tuning file OK: ${EMBAG_TUNED_ISA}, ${n} kernel(s)${bucketed}")
endif ()
