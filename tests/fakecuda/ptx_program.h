// tests/fakecuda/ptx_program.h: the decoded form of a PTX module, which ptx_parser.cpp builds
// once per cuModuleLoadData and ptx_executor.cpp runs for every thread of every launch.
//
// Why an interpreter over decoded instructions (and not PTX translated to C and compiled when the
// module loads): a module is used for a handful of launches in most tests but loaded by every
// test process, so a C compiler per load (a second or more for each of 168 modules) would cost
// more than it saves; the tests would also depend on a compiler at run time, and the host
// compiler's own floating-point choices (contraction, x87, flags) would sit between PTX's
// semantics and the result. Decoded once, an instruction is a fixed-size struct whose operands
// are indices into one array of 64-bit slots per thread: registers, the special registers, and
// every immediate (each immediate gets a slot of its own, filled when the module is parsed), so
// the executor's inner loop reads and writes slots with no operand-kind branches and no string
// work. The opcode and its type are folded into one 16-bit key, so one switch dispatches.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "ptx_interpreter.h"

namespace fakecuda::ptx {

// Operand types. Bit types (.b16...) decode to the unsigned type of the same width wherever
// signedness does not change the result (add, and, mov...).
enum Ty : uint8_t {
  kPred,
  kU8,
  kS8,
  kU16,
  kS16,
  kU32,
  kS32,
  kU64,
  kS64,
  kF16,
  kBF16,
  kF32,
  kF64,
  kB8,
  kB16,
  kB32,
  kB64,
  kTyCount
};
static_assert(kTyCount <= 32, "Ty must fit the low 5 bits of an opcode key");

inline int ty_bits(Ty t) {
  switch (t) {
    case kPred:
      return 1;
    case kU8:
    case kS8:
    case kB8:
      return 8;
    case kU16:
    case kS16:
    case kF16:
    case kBF16:
    case kB16:
      return 16;
    case kU32:
    case kS32:
    case kF32:
    case kB32:
      return 32;
    default:
      return 64;
  }
}
inline bool ty_signed(Ty t) { return t == kS8 || t == kS16 || t == kS32 || t == kS64; }
inline bool ty_float(Ty t) { return t == kF16 || t == kBF16 || t == kF32 || t == kF64; }

// Instruction families; the executor's key is family * 32 + type.
enum Fam : uint16_t {
  kNop,
  // Integer (type: kU16/kS16/kU32/kS32/kU64/kS64, or kPred for the logic ops).
  kAdd,
  kSub,
  kMulLo,
  kMulHi,
  kMulWide,
  kMadLo,
  kMadHi,
  kMadWide,
  kDiv,
  kRem,
  kMin,
  kMax,
  kAbs,
  kNeg,
  kAnd,
  kOr,
  kXor,
  kNot,
  kCnot,
  kShl,
  kShr,
  kBfe,
  kPopc,
  kClz,
  // Floating point (type kF32 / kF64); rounding and .ftz/.sat in the instruction's fields.
  kFAdd,
  kFSub,
  kFMul,
  kFFma,
  kFDiv,
  kFSqrt,
  kFRcp,
  kFEx2,
  kFLg2,
  kFMin,
  kFMax,
  kFAbs,
  kFNeg,
  // Compare, select, move.
  kSetp,
  kSelp,
  kMov,
  kPack2,    // d = {a, b}: two halves of ty_bits(type) / 2 bits, a the low one
  kUnpack2,  // {d, e} = a
  // Conversions (type: the destination's; ty2: the source's).
  kCvtII,
  kCvtIF,  // integer to float
  kCvtFI,  // float to integer
  kCvtFF,
  // Memory (type: the access's; v: the vector's registers when count > 1).
  kLdGlobal,
  kStGlobal,
  kLdParam,
  kStParam,
  // Control.
  kBra,
  kCall,
  kRet,
  kExit,
  kTrap,
  kFamCount
};

constexpr uint16_t key(Fam f, Ty t) { return static_cast<uint16_t>(f * 32 + t); }

enum Rnd : uint8_t { kRndNone, kRn, kRz, kRm, kRp, kRni, kRzi, kRmi, kRpi };

// setp's comparisons.
enum Cmp : uint8_t {
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kEqu,
  kNeu,
  kLtu,
  kLeu,
  kGtu,
  kGeu,
  kNum,
  kNan,
};

enum Flag : uint8_t {
  kFtz = 1,
  kSat = 2,
  kApprox = 4,      // .approx / .full: within the documented error (computed exactly here)
  kNanMode = 8,     // min/max .NaN
  kSignExt = 16,    // loads: sign-extend into a wider register
  kSecondDest = 32  // setp p|q
};

// The fixed slots of every function's register file.
enum FixedSlot : uint32_t {
  kSlotTid = 0,     // %tid.x, .y, .z
  kSlotNtid = 3,    // %ntid
  kSlotCtaid = 6,   // %ctaid
  kSlotNctaid = 9,  // %nctaid
  kSlotZero = 12,   // constant 0: the base of an address with no register
  kSlotTrue = 13,   // constant 1: the guard of an unguarded instruction
  kFirstFreeSlot = 14
};

struct Inst {
  uint16_t op = 0;  // key(family, type)
  uint8_t ty2 = 0;  // cvt: source type; setp: comparison
  uint8_t rnd = kRndNone;
  uint8_t flags = 0;
  uint8_t count = 1;      // vector loads/stores: registers in v
  uint8_t reg_bits = 0;   // loads: the destination register's width
  uint8_t guard_neg = 0;  // 1: run when the guard predicate is false
  uint32_t guard = kSlotTrue;
  uint32_t d = kSlotZero, a = kSlotZero, b = kSlotZero, c = kSlotZero, e = kSlotZero;
  uint32_t v[4] = {0, 0, 0, 0};
  int64_t imm = 0;  // address offset, branch target, call site
};

struct ParamDecl {
  std::string name;
  uint32_t offset = 0;  // in the frame's parameter bytes
  uint32_t size = 0;
  uint32_t align = 0;
};

struct Copy {
  uint32_t from, to, size;
};

struct CallSite {
  uint32_t callee = 0;
  std::vector<Copy> args;  // caller's frame -> callee's frame
  std::vector<Copy> rets;  // callee's frame -> caller's frame, after ret
};

struct Function {
  std::string name;
  bool is_entry = false;
  bool has_body = false;
  std::vector<Inst> code;
  std::vector<uint32_t> lines;     // source line of each instruction
  std::vector<std::string> texts;  // source text of each instruction, for error messages
  std::vector<uint64_t> init;      // initial slot values: constants set, registers 0
  std::vector<ParamDecl> params;   // entry parameters, or a function's arguments
  std::vector<ParamDecl> rets;     // a function's return parameters
  uint32_t param_bytes = 0;        // the frame's parameter bytes: params, rets, call arguments
  std::vector<CallSite> calls;
  uint32_t maxntid[3] = {0, 0, 0};  // .maxntid / .reqntid (0: none)
  bool reqntid = false;
};

struct Program {
  std::vector<Function> functions;
  std::unordered_map<std::string, uint32_t> by_name;
};

// Parses `text` into `out`; false with *error ("line N: why: `text`") otherwise.
bool parse_program(const std::string& text, Program* out, std::string* error);

// Runs every thread of `grid` x `block` of entry `entry` (ptx_executor.cpp); adds the number of
// instructions executed to *instructions. The PtxModule::launch contract.
bool execute(const Program& program, uint32_t entry, Dim3 grid, Dim3 block,
             const std::vector<const void*>& params, MemoryChecker& memory, std::string* error,
             uint64_t* instructions);

// Instructions executed by every launch of `module` so far (for throughput measurements).
uint64_t instructions_executed(const PtxModule& module);

}  // namespace fakecuda::ptx
