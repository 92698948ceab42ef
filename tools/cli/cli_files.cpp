// File handling shared by the `embag` subcommands (see cli_files.h).
#include "cli_files.h"

#include <filesystem>
#include <system_error>

#include "cli_args.h"

namespace embag::cli {

bool same_file(const std::string& a, const std::string& b) {
  std::error_code error;
  if (std::filesystem::equivalent(a, b, error)) {
    return true;
  }
  return std::filesystem::absolute(a, error).lexically_normal() ==
         std::filesystem::absolute(b, error).lexically_normal();
}

Status check_output_paths(const std::vector<FlagPath>& inputs,
                          const std::vector<FlagPath>& outputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    for (const FlagPath& input : inputs) {
      if (same_file(outputs[i].path, input.path)) {
        return Status(StatusCode::kInvalidArgument, outputs[i].flag + " " + outputs[i].path +
                                                        " is the same file as " + input.flag +
                                                        "; inputs are never overwritten");
      }
    }
    for (size_t j = 0; j < i; ++j) {
      if (same_file(outputs[i].path, outputs[j].path)) {
        return Status(StatusCode::kInvalidArgument,
                      outputs[j].flag + " and " + outputs[i].flag + " are the same file");
      }
    }
  }
  return Status::Ok();
}

TensorView view_with_true_ndim(npy::Array& array) {
  TensorView view = array.view();
  if (array.shape.empty()) {
    view.ndim = 0;
  }
  return view;
}

// npy::save is atomic per file; for several files, each is first saved complete under a unique
// staging name beside its target (npy::save_staged: mkstemp, so concurrent runs writing the same
// outputs never collide) and only then renamed into place, so the failures that happen (disk
// full, unwritable folder) leave no target changed; what remains is a rename within a folder
// just written to, which in practice does not fail.
Status save_all_or_nothing(const std::vector<std::pair<std::string, const npy::Array*>>& files) {
  if (files.size() == 1) {
    return npy::save(files[0].first, *files[0].second);
  }
  std::vector<std::string> staged;
  auto discard_staged = [&staged] {
    for (const std::string& path : staged) {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  };
  for (const auto& [path, array] : files) {
    std::string staging_path;
    Status status = npy::save_staged(path, *array, &staging_path);
    if (!status.ok()) {
      discard_staged();
      return status;
    }
    staged.push_back(staging_path);
  }
  for (size_t i = 0; i < files.size(); ++i) {
    std::error_code error;
    std::filesystem::rename(staged[i], files[i].first, error);
    if (error) {
      discard_staged();
      return Status(
          StatusCode::kInvalidArgument,
          files[i].first + ": cannot move the finished file into place: " + error.message());
    }
  }
  return Status::Ok();
}

int save_outputs(const std::vector<std::pair<std::string, const npy::Array*>>& files) {
  const Status status = save_all_or_nothing(files);
  if (!status.ok()) {
    return report_error(kExitFailure, status.message());
  }
  return kExitOk;
}

}  // namespace embag::cli
