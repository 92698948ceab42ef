// The `embag` command-line program: picks the subcommand and turns anything thrown (in practice
// only running out of memory) into an error message instead of an abort.
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_commands.h"

namespace {

constexpr char kUsage[] = R"(usage: embag <command> [options]

PyTorch's torch.nn.functional.embedding_bag as ahead-of-time compiled Halide kernels.

commands:
  forward   run embedding_bag on arrays stored as .npy files
  backward  compute embedding_bag's gradients on arrays stored as .npy files
  quantize  quantize a float table (.npy) into PyTorch's or FBGEMM's quantized rows
  info      list the compiled kernel variants, the CPU's ISAs and which variant runs here
  demo      run a generated DLRM-like batch, check it against a plain loop, and time it

'embag <command> --help' describes a command.
)";

int dispatch(const std::string& command, const std::vector<std::string>& args) {
  using namespace embag::cli;
  if (command == "forward") {
    return run_forward(args);
  }
  if (command == "backward") {
    return run_backward(args);
  }
  if (command == "quantize") {
    return run_quantize(args);
  }
  if (command == "info") {
    return run_info(args);
  }
  if (command == "demo") {
    return run_demo(args);
  }
  std::cerr << kUsage;
  return report_error(kExitUsage, "unknown command '" + command + "'");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace embag::cli;
  std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  if (args.empty()) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  if (args[0] == "-h" || args[0] == "--help") {
    std::cout << kUsage;
    return kExitOk;
  }
  // "embag help forward" reads naturally and means "embag forward --help".
  if (args[0] == "help") {
    if (args.size() == 1) {
      std::cout << kUsage;
      return kExitOk;
    }
    args = {args[1], "--help"};
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    return dispatch(command, args);
  } catch (const std::bad_alloc&) {
    return report_error(kExitFailure, "out of memory");
  } catch (const std::exception& error) {
    return report_error(kExitFailure, error.what());
  }
}
