# Negative (and one positive) tests of the tuning-file reader the build uses
# (cmake/EmbagTuning.cmake), one row per case: how good.json is broken, and the error the reader
# must give. Each case is written to WORK_DIR and checked by running the reader as a script, the
# same code path as `cmake -DEMBAG_TUNING_FILE=...`.
# cmake -DSOURCE_DIR=<repo> -DWORK_DIR=<dir> -DEMBAG_VERSION=<v> -DHALIDE_VERSION=<v> -P this
file(READ "${SOURCE_DIR}/tests/tuning/good.json" good)
string(REPLACE "@EMBAG_VERSION@" "${EMBAG_VERSION}" good "${good}")
string(REPLACE "@HALIDE_VERSION@" "${HALIDE_VERSION}" good "${good}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(failures 0)
set(n 0)
# check(<name> <text to replace in good.json, or ALL / TRUNCATE / APPEND / NONE / MISSING>
#       <replacement> <regex the reader's output must match>)
function(check name from to expect)
  if (from STREQUAL "ALL")
    set(text "${to}")
  elseif (from STREQUAL "TRUNCATE")
    string(SUBSTRING "${good}" 0 300 text)
  elseif (from STREQUAL "APPEND")
    set(text "${good}${to}")
  elseif (from STREQUAL "NONE" OR from STREQUAL "MISSING")
    set(text "${good}")
  else ()
    string(FIND "${good}" "${from}" at)
    if (at LESS 0)
      message(SEND_ERROR "case '${name}': '${from}' is not in good.json (a broken test)")
    endif ()
    string(REPLACE "${from}" "${to}" text "${good}")
  endif ()
  math(EXPR n "${n} + 1")
  set(n ${n} PARENT_SCOPE)
  set(path "${WORK_DIR}/case${n}.json")
  if (from STREQUAL "MISSING")
    file(REMOVE "${path}")
  else ()
    file(WRITE "${path}" "${text}")
  endif ()
  execute_process(COMMAND "${CMAKE_COMMAND}" -DFILE=${path} -DISAS=avx512
                          -DEMBAG_VERSION=${EMBAG_VERSION} -DHALIDE_VERSION=${HALIDE_VERSION}
                          -P "${SOURCE_DIR}/cmake/EmbagTuning.cmake"
                  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  set(all "${out}${err}")
  # CMake wraps long messages; the expectation is matched against them unwrapped.
  string(REGEX REPLACE "\n *" " " flat "${all}")
  set(should_pass OFF)
  if (expect MATCHES "tuning file OK")
    set(should_pass ON)
  endif ()
  if (NOT flat MATCHES "${expect}" OR (should_pass AND NOT rc EQUAL 0)
      OR (NOT should_pass AND rc EQUAL 0))
    math(EXPR failures "${failures} + 1")
    set(failures ${failures} PARENT_SCOPE)
    message("FAIL ${name}: expected /${expect}/ (exit ${rc}), got:\n${all}")
  else ()
    message("ok   ${name}")
  endif ()
endfunction()

check("good" NONE "" "tuning file OK: avx512, 1 kernel")
check("empty" ALL "" "the file is empty")
check("whitespace only" ALL "  \n\t " "the file is empty")
check("malformed" "\"gain\": 1.31," "\"gain\": 1.31,," "not valid JSON: .*Line 18, Column 20")
check("truncated" TRUNCATE "" "not valid JSON")
check("trailing text" APPEND "\n]" "must be one JSON object")
check("array" ALL "[1, 2]" "must be one JSON object")
check("not a tuning file" "\"embag-tuning\"" "\"something-else\""
      "'format' is \"something-else\", not \"embag-tuning\"")
check("missing isa" "\"isa\": \"avx512\"," "" "key 'isa' is missing")
check("format_version a string" "\"format_version\": 1" "\"format_version\": \"1\""
      "key 'format_version' must be an integer, but is a string")
check("future format" "\"format_version\": 1" "\"format_version\": 2"
      "format_version 2 is not supported")
check("other ISA" "\"isa\": \"avx512\"" "\"isa\": \"neon\""
      "tuned for ISA 'neon', but this build compiles avx512")
check("older embag" "\"embag_version\": \"${EMBAG_VERSION}\"" "\"embag_version\": \"0.0.1\""
      "made by embag 0.0.1, but this is embag ${EMBAG_VERSION}")
check("other Halide" "\"halide_version\": \"${HALIDE_VERSION}\""
      "\"halide_version\": \"20.0.0\"" "made with Halide 20.0.0")
check("kernels not an array" "\"kernels\": [" "\"kernels\": {}, \"x\": ["
      "key 'kernels' must be an array, but is an object")
check("missing params" "\"params\": {\"prefetch_distance\": 0, \"max_tile_vectors\": 16}," ""
      "kernels\\[0\\].params is missing")
check("fractional param" "\"prefetch_distance\": 0" "\"prefetch_distance\": 0.5"
      "kernels\\[0\\].params.prefetch_distance must be an integer, but is 0.5")
check("boolean param" "\"prefetch_distance\": 0" "\"prefetch_distance\": true"
      "kernels\\[0\\].params.prefetch_distance must be a string, but is a boolean")
check("algorithm param" "\"max_tile_vectors\"" "\"mode\""
      "kernels\\[0\\].params: 'mode' is not a schedule parameter")
check("tasks_per_thread 0" "\"tasks_per_thread\": 2" "\"tasks_per_thread\": 0"
      "kernels\\[0\\].tasks_per_thread must be in \\[1, 1024\\], but is 0")
check("unknown mode" "\"mode\": \"sum\"" "\"mode\": \"summ\""
      "kernels\\[0\\].mode is \"summ\" \\(known: sum, wsum, mean, max, max_values\\)")
check("unknown pipeline" "\"pipeline\": \"forward\"" "\"pipeline\": \"renorm\""
      "kernels\\[0\\].pipeline is \"renorm\": tuned pipelines are forward, backward_rows and dense_scatter")
check("no such file" MISSING "" "case23.json: no such file")

# D buckets: a kernel with one schedule per D range; the ranges must tile [1, 2147483647].
set(second "{\"pipeline\": \"forward\", \"mode\": \"sum\", \"weight\": \"f32\", \"index\": \"i64\", \"dim_min\": 49, \"dim_max\": 2147483647, \"params\": {}, \"tasks_per_thread\": 4, \"gain\": 1.0}")
string(REPLACE "\"dim_max\": 2147483647," "\"dim_max\": 48," two "${good}")
string(REGEX REPLACE "}[ \n]*][ \n]*}[ \n]*$" "},\n    ${second}\n  ]\n}\n" two "${two}")
set(good_one "${good}")
set(good "${two}")
check("two D buckets" NONE "" "tuning file OK: avx512, 1 kernel\\(s\\) sum_f32_i64:2")
check("gap between buckets" "\"dim_min\": 49" "\"dim_min\": 50"
      "kernels\\[1\\]: sum f32 i64 D range starts at 50, but must start at 49")
check("overlapping buckets" "\"dim_min\": 49" "\"dim_min\": 40"
      "kernels\\[1\\]: sum f32 i64 D range starts at 40, but must start at 49")
set(good "${good_one}")
check("D not covered" "\"dim_max\": 2147483647" "\"dim_max\": 64"
      "the D ranges of sum_f32_i64 end at 64, not 2147483647")
check("D range reversed" "\"dim_min\": 1, \"dim_max\": 2147483647" "\"dim_min\": 9, \"dim_max\": 5"
      "kernels\\[0\\]: D range \\[9, 5\\] is not a range")
check("D range not from 1" "\"dim_min\": 1," "\"dim_min\": 2,"
      "D range starts at 2, but must start at 1")

# Table classes (forward) and backward kernels: a file from warm and cold shapes holds per-class
# entries, each class's D ranges tiling [1, 2147483647] on their own, and backward entries
# (one schedule for every table; backward_rows has no index dtype).
set(good "${good_one}")
set(warm "{\"pipeline\": \"forward\", \"mode\": \"sum\", \"weight\": \"f32\", \"index\": \"i64\", \"table_class\": \"cache-resident\", \"dim_min\": 1, \"dim_max\": 2147483647, \"params\": {\"prefetch_distance\": 0}, \"tasks_per_thread\": 1, \"gain\": 1.1}")
set(cold "{\"pipeline\": \"forward\", \"mode\": \"sum\", \"weight\": \"f32\", \"index\": \"i64\", \"table_class\": \"memory-resident\", \"dim_min\": 1, \"dim_max\": 2147483647, \"params\": {\"prefetch_distance\": 24}, \"tasks_per_thread\": 4, \"gain\": 1.1}")
set(rows "{\"pipeline\": \"backward_rows\", \"mode\": \"sum\", \"weight\": \"f32\", \"table_class\": \"any\", \"dim_min\": 1, \"dim_max\": 2147483647, \"params\": {\"rows_per_task\": 64}, \"tasks_per_thread\": 4, \"gain\": 1.1}")
set(dense "{\"pipeline\": \"dense_scatter\", \"mode\": \"max\", \"weight\": \"f32\", \"dim_min\": 1, \"dim_max\": 2147483647, \"params\": {\"column_vectors\": 2}, \"tasks_per_thread\": 4, \"gain\": 1.1}")
string(REGEX REPLACE "\"kernels\": \\[.*$" "\"kernels\": [\n    ${warm},\n    ${cold},\n    ${rows},\n    ${dense}\n  ]\n}\n" good "${good_one}")
check("classes and backward" NONE "" "tuning file OK: avx512, 4 kernel\\(s\\)")
check("unknown table class" "\"table_class\": \"cache-resident\"" "\"table_class\": \"warm\""
      "kernels\\[0\\].table_class is \"warm\" \\(known: any, cache-resident, memory-resident\\)")
check("any beside a class" "\"table_class\": \"memory-resident\"" "\"table_class\": \"any\""
      "kernels\\[1\\]: sum f32 i64 has entries for any table and entries per table class")
check("class of a backward kernel" "\"backward_rows\", \"mode\": \"sum\", \"weight\": \"f32\", \"table_class\": \"any\""
      "\"backward_rows\", \"mode\": \"sum\", \"weight\": \"f32\", \"table_class\": \"cache-resident\""
      "kernels\\[2\\].table_class is \"cache-resident\", but backward_rows kernels serve every table")
check("backward max_values" "\"backward_rows\", \"mode\": \"sum\"" "\"backward_rows\", \"mode\": \"max_values\""
      "kernels\\[2\\]: backward_rows has no mode max_values")
check("a class not covering every D" "\"table_class\": \"cache-resident\", \"dim_min\": 1, \"dim_max\": 2147483647"
      "\"table_class\": \"cache-resident\", \"dim_min\": 1, \"dim_max\": 64"
      "the D ranges of sum_f32_i64_cache end at 64, not 2147483647")
check("dense scatter sum without index" "\"dense_scatter\", \"mode\": \"max\"" "\"dense_scatter\", \"mode\": \"sum\""
      "kernels\\[3\\].index is missing")

if (failures GREATER 0)
  message(FATAL_ERROR "${failures} tuning-file case(s) failed")
endif ()
message("all ${n} tuning-file cases passed")
