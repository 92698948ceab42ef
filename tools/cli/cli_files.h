// File handling shared by the `embag` subcommands that read and write .npy arrays: refusing to
// overwrite an input, viewing loaded arrays, and writing several outputs all or nothing.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "embag/status.h"
#include "embag/tensor.h"
#include "npy/npy_file.h"

namespace embag::cli {

// A path given on the command line and the flag that gave it ("--weight"), for messages.
struct FlagPath {
  std::string flag;
  std::string path;
};

// True when two paths name the same file, whether or not it exists yet.
bool same_file(const std::string& a, const std::string& b);

// Fails (kInvalidArgument, a command-line mistake) when an output names the same file as an
// input or as another output: writing over an input would break the promise that inputs are
// never modified, and two outputs on one path would silently lose one of them.
Status check_output_paths(const std::vector<FlagPath>& inputs,
                          const std::vector<FlagPath>& outputs);

// A view that reports the array's real number of dimensions: npy::Array::view() shows a 0-d
// array as one element, but validation should tell the user "got Tensor of dimension 0".
TensorView view_with_true_ndim(npy::Array& array);

// Writes every (path, array) pair or none of them (see cli_files.cpp for how far that holds).
Status save_all_or_nothing(const std::vector<std::pair<std::string, const npy::Array*>>& files);

// save_all_or_nothing for a subcommand: kExitOk, or the error reported and kExitFailure.
int save_outputs(const std::vector<std::pair<std::string, const npy::Array*>>& files);

}  // namespace embag::cli
