// The `embag` subcommands. Each is the main() of one command and takes the words after the
// command's name; embag_main.cpp only dispatches to them.
#pragma once

#include <string>
#include <vector>

namespace embag::cli {

// embag forward: embedding_bag on .npy files (cli_forward.cpp).
int run_forward(const std::vector<std::string>& args);
// embag backward: the gradients of embedding_bag on .npy files (cli_backward.cpp).
int run_backward(const std::vector<std::string>& args);
// embag info: compiled variants, CPU ISAs and what the dispatcher picks (cli_info.cpp).
int run_info(const std::vector<std::string>& args);
// embag demo: a generated DLRM-like batch, checked against a plain loop, then timed
// (cli_demo.cpp).
int run_demo(const std::vector<std::string>& args);
// embag quantize: a float table to a quantized one (cli_quantize.cpp).
int run_quantize(const std::vector<std::string>& args);

}  // namespace embag::cli
