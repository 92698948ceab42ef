// tests/fakecuda/ptx_interpreter.cpp: PtxModule, the fake driver's view of the interpreter: parse
// once (ptx_parser.cpp), launch many times (ptx_executor.cpp). See ptx_program.h for why the
// kernels are interpreted from a decoded form rather than translated to C.
#include <atomic>

#include "ptx_interpreter.h"
#include "ptx_program.h"

namespace fakecuda {
namespace {

class Module final : public PtxModule {
 public:
  explicit Module(ptx::Program program) : program_(std::move(program)) {}

  bool has_entry(const std::string& name) const override { return entry(name) != nullptr; }

  std::vector<ParamInfo> entry_params(const std::string& name) const override {
    std::vector<ParamInfo> out;
    if (const ptx::Function* f = entry(name)) {
      for (const ptx::ParamDecl& p : f->params) out.push_back({p.name, p.size, p.align});
    }
    return out;
  }

  bool launch(const std::string& name, Dim3 grid, Dim3 block,
              const std::vector<const void*>& params, MemoryChecker& memory,
              std::string* error) override {
    const ptx::Function* f = entry(name);
    if (!f) {
      *error = "no entry '" + name + "' in this module";
      return false;
    }
    uint64_t executed = 0;
    bool ok = ptx::execute(program_, program_.by_name.at(name), grid, block, params, memory, error,
                           &executed);
    executed_ += executed;
    return ok;
  }

  uint64_t executed() const { return executed_.load(); }

 private:
  const ptx::Function* entry(const std::string& name) const {
    auto it = program_.by_name.find(name);
    if (it == program_.by_name.end()) return nullptr;
    const ptx::Function& f = program_.functions[it->second];
    return f.is_entry ? &f : nullptr;
  }

  ptx::Program program_;
  // Launches of one module may come from several threads (the fake serialises nothing itself).
  std::atomic<uint64_t> executed_{0};
};

}  // namespace

std::unique_ptr<PtxModule> PtxModule::parse(const std::string& ptx_text, std::string* error) {
  ptx::Program program;
  std::string why;
  if (!ptx::parse_program(ptx_text, &program, &why)) {
    if (error) *error = why;
    return nullptr;
  }
  return std::make_unique<Module>(std::move(program));
}

namespace ptx {
uint64_t instructions_executed(const PtxModule& module) {
  const auto* m = dynamic_cast<const Module*>(&module);
  return m ? m->executed() : 0;
}
}  // namespace ptx

}  // namespace fakecuda
