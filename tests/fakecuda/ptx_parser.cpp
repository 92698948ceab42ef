// tests/fakecuda/ptx_parser.cpp: PTX text -> the decoded program of ptx_program.h.
//
// Accepts exactly the forms the executor implements, and refuses everything else with the line
// and its text: an unknown opcode, an unknown or unexpected modifier (every modifier of an
// instruction must be consumed by its decoder), a state space the fake does not model (.shared,
// .local, .const, module-level .global variables), a directive it does not know. A form that
// parses therefore runs with PTX's semantics, never approximately.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>

#include "ptx_program.h"

namespace fakecuda::ptx {
namespace {

struct Tok {
  std::string s;
  uint32_t line = 0;
  bool word = false;  // identifier, opcode, directive, register or number (else punctuation)
};

bool word_char(char ch) {
  return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '$' || ch == '%' ||
         ch == '.';
}

// Splits the text into words and punctuation, dropping comments; keeps each token's line.
bool lex(const std::string& text, std::vector<Tok>* out, std::string* error) {
  uint32_t line = 1;
  size_t i = 0, n = text.size();
  while (i < n) {
    char ch = text[i];
    if (ch == '\n') {
      ++line;
      ++i;
    } else if (std::isspace(static_cast<unsigned char>(ch))) {
      ++i;
    } else if (ch == '/' && i + 1 < n && text[i + 1] == '/') {
      while (i < n && text[i] != '\n') ++i;
    } else if (ch == '/' && i + 1 < n && text[i + 1] == '*') {
      size_t end = text.find("*/", i + 2);
      if (end == std::string::npos) {
        *error = "line " + std::to_string(line) + ": unterminated comment";
        return false;
      }
      for (size_t k = i; k < end; ++k) line += text[k] == '\n';
      i = end + 2;
    } else if (ch == '"') {
      size_t end = text.find('"', i + 1);
      if (end == std::string::npos) {
        *error = "line " + std::to_string(line) + ": unterminated string";
        return false;
      }
      out->push_back({text.substr(i, end + 1 - i), line, true});
      i = end + 1;
    } else if (word_char(ch) ||
               (ch == '-' && i + 1 < n && std::isdigit(static_cast<unsigned char>(text[i + 1])))) {
      size_t start = i++;
      while (i < n && word_char(text[i])) ++i;
      out->push_back({text.substr(start, i - start), line, true});
    } else if (std::strchr(",;:{}()[]+@!|<>=", ch)) {
      out->push_back({std::string(1, ch), line, false});
      ++i;
    } else {
      *error =
          "line " + std::to_string(line) + ": unexpected character '" + std::string(1, ch) + "'";
      return false;
    }
  }
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t at = s.find(sep, start);
    parts.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return parts;
    start = at + 1;
  }
}

bool parse_type(const std::string& s, Ty* t) {
  static const std::map<std::string, Ty> types = {
      {"pred", kPred}, {"u8", kU8},   {"s8", kS8},     {"b8", kB8},   {"u16", kU16}, {"s16", kS16},
      {"b16", kB16},   {"u32", kU32}, {"s32", kS32},   {"b32", kB32}, {"u64", kU64}, {"s64", kS64},
      {"b64", kB64},   {"f16", kF16}, {"bf16", kBF16}, {"f32", kF32}, {"f64", kF64}};
  auto it = types.find(s);
  if (it == types.end()) return false;
  *t = it->second;
  return true;
}

// Bit types behave as the unsigned type of their width.
Ty unsigned_of(Ty t) {
  switch (t) {
    case kB8:
    case kS8:
      return kU8;
    case kB16:
    case kS16:
      return kU16;
    case kB32:
    case kS32:
      return kU32;
    case kB64:
    case kS64:
      return kU64;
    default:
      return t;
  }
}
Ty int_of(Ty t) {  // .b -> .u, signed kept
  switch (t) {
    case kB8:
      return kU8;
    case kB16:
      return kU16;
    case kB32:
      return kU32;
    case kB64:
      return kU64;
    default:
      return t;
  }
}
bool is_int(Ty t) { return !ty_float(t) && t != kPred; }

// A parsed PTX integer or floating-point literal.
struct Literal {
  enum Kind { kInt, kF32Bits, kF64Bits, kDecimal } kind = kInt;
  uint64_t bits = 0;   // kInt: two's complement; kF32Bits/kF64Bits: IEEE bits
  double decimal = 0;  // kDecimal
};

bool parse_literal(const std::string& s, Literal* lit) {
  if (s.empty()) return false;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'f' || s[1] == 'F' || s[1] == 'd' || s[1] == 'D')) {
    bool f32 = s[1] == 'f' || s[1] == 'F';
    if (s.size() != (f32 ? 10u : 18u)) return false;
    char* end = nullptr;
    lit->bits = std::strtoull(s.c_str() + 2, &end, 16);
    if (*end) return false;
    lit->kind = f32 ? Literal::kF32Bits : Literal::kF64Bits;
    return true;
  }
  bool neg = s[0] == '-';
  std::string body = neg ? s.substr(1) : s;
  if (body.empty() || !std::isdigit(static_cast<unsigned char>(body[0]))) return false;
  bool hex = body.size() > 1 && body[0] == '0' && (body[1] == 'x' || body[1] == 'X');
  if (!hex && body.find_first_of(".eE") != std::string::npos) {
    char* end = nullptr;
    lit->decimal = std::strtod(s.c_str(), &end);
    if (*end) return false;
    lit->kind = Literal::kDecimal;
    return true;
  }
  if (!body.empty() && (body.back() == 'U' || body.back() == 'u')) body.pop_back();
  int base = 10;
  size_t skip = 0;
  if (hex) {
    base = 16;
    skip = 2;
  } else if (body.size() > 1 && body[0] == '0' && (body[1] == 'b' || body[1] == 'B')) {
    base = 2;
    skip = 2;
  } else if (body.size() > 1 && body[0] == '0') {
    base = 8;
    skip = 1;
  }
  if (skip >= body.size()) return false;
  char* end = nullptr;
  errno = 0;
  uint64_t v = std::strtoull(body.c_str() + skip, &end, base);
  if (*end || errno) return false;
  lit->kind = Literal::kInt;
  lit->bits = neg ? (~v + 1) : v;
  return true;
}

uint64_t f32_bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
uint64_t f64_bits_of(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}

// One operand as written.
struct Operand {
  enum Kind { kWord, kAddress, kVector, kList } kind = kWord;
  std::vector<std::string> words;  // kWord: 1 (2 for p|q); kVector/kList: elements
  std::string base;                // kAddress
  int64_t offset = 0;              // kAddress
};

struct Reg {
  uint32_t slot;
  Ty type;
};

struct Scope {
  std::unordered_map<std::string, Reg> regs;
  std::unordered_map<std::string, ParamDecl> params;
};

struct PendingCall {
  uint32_t function, site;
  std::string callee;
  std::vector<ParamDecl> args, rets;  // the caller's argument / return parameters
  uint32_t line;
};

class Parser {
 public:
  Parser(const std::string& text, Program* prog) : prog_(prog) {
    std::istringstream in(text);
    std::string l;
    while (std::getline(in, l)) lines_.push_back(l);
  }

  bool run(const std::string& text, std::string* error) {
    if (!lex(text, &toks_, error)) return false;
    if (!parse_module() || !resolve_calls()) {
      *error = error_;
      return false;
    }
    return true;
  }

 private:
  // ---- token access -----------------------------------------------------------------------
  bool at_end() const { return pos_ >= toks_.size(); }
  const Tok& peek(size_t ahead = 0) const {
    static const Tok end_tok{"<end of module>", 0, false};
    return pos_ + ahead < toks_.size() ? toks_[pos_ + ahead] : end_tok;
  }
  uint32_t line() const {
    return at_end() ? (toks_.empty() ? 0 : toks_.back().line) : toks_[pos_].line;
  }
  bool is(const char* s, size_t ahead = 0) const { return peek(ahead).s == s; }
  bool fail(const std::string& why, uint32_t at = 0) {
    if (error_.empty()) {
      uint32_t l = at ? at : stmt_line_ ? stmt_line_ : line();
      std::string text = l >= 1 && l <= lines_.size() ? lines_[l - 1] : std::string();
      size_t first = text.find_first_not_of(" \t");
      text = first == std::string::npos ? "" : text.substr(first);
      error_ = "line " + std::to_string(l) + ": " + why + ": `" + text + "`";
    }
    return false;
  }
  bool expect(const char* s) {
    if (!is(s)) return fail(std::string("expected '") + s + "', found '" + peek().s + "'");
    ++pos_;
    return true;
  }
  bool take(const char* s) {
    if (!is(s)) return false;
    ++pos_;
    return true;
  }
  bool number(uint64_t* v) {
    Literal lit;
    if (!peek().word || !parse_literal(peek().s, &lit) || lit.kind != Literal::kInt) {
      return fail("expected an integer, found '" + peek().s + "'");
    }
    *v = lit.bits;
    ++pos_;
    return true;
  }

  // ---- module level -------------------------------------------------------------------------
  bool parse_module() {
    while (!at_end()) {
      if (take(".version")) {
        if (!peek().word) return fail("expected a version");
        ++pos_;
      } else if (take(".target")) {
        do {
          if (!peek().word) return fail("expected a target");
          ++pos_;
        } while (take(","));
      } else if (take(".address_size")) {
        uint64_t v = 0;
        if (!number(&v)) return false;
        if (v != 64) return fail("only .address_size 64 is supported");
      } else if (is(".visible") || is(".extern") || is(".weak") || is(".entry") || is(".func")) {
        if (!parse_function()) return false;
      } else {
        return fail("unsupported module-level statement '" + peek().s + "'");
      }
    }
    return true;
  }

  // `.param .u64 .ptr .align 1 name` / `.param .align 8 .b8 name[16]` / `.param .f32 name`.
  bool parse_param_decl(ParamDecl* p) {
    if (!expect(".param")) return false;
    uint32_t align = 0;
    Ty t = kB8;
    bool have_type = false;
    while (peek().word && peek().s[0] == '.') {
      std::string m = peek().s.substr(1);
      ++pos_;
      if (m == "align") {
        uint64_t a = 0;
        if (!number(&a)) return false;
        align = static_cast<uint32_t>(a);
      } else if (m == "ptr" || m == "global") {
        // Pointer attributes: a hint to the optimizer, no change to the parameter's bytes.
      } else if (parse_type(m, &t) && t != kPred) {
        have_type = true;
      } else {
        return fail("unsupported parameter attribute '." + m + "'");
      }
    }
    if (!have_type) return fail("parameter without a type");
    if (!peek().word) return fail("expected a parameter name");
    p->name = peek().s;
    ++pos_;
    uint32_t count = 1;
    if (take("[")) {
      uint64_t k = 0;
      if (!number(&k) || !expect("]")) return false;
      count = static_cast<uint32_t>(k);
    }
    p->size = static_cast<uint32_t>(ty_bits(t) / 8) * count;
    p->align = std::max<uint32_t>(align, static_cast<uint32_t>(ty_bits(t) / 8));
    return true;
  }

  void place_param(Function* f, ParamDecl* p) {
    f->param_bytes = (f->param_bytes + p->align - 1) / p->align * p->align;
    p->offset = f->param_bytes;
    f->param_bytes += p->size;
  }

  bool parse_param_list(Function* f, std::vector<ParamDecl>* out) {
    if (!expect("(")) return false;
    if (!take(")")) {
      do {
        ParamDecl p;
        if (!parse_param_decl(&p)) return false;
        place_param(f, &p);
        out->push_back(p);
      } while (take(","));
      if (!expect(")")) return false;
    }
    return true;
  }

  bool parse_function() {
    bool is_extern = false;
    while (is(".visible") || is(".extern") || is(".weak"))
      is_extern |= peek(0).s == ".extern", ++pos_;
    Function f;
    uint32_t header_line = line();
    if (take(".entry")) {
      f.is_entry = true;
    } else if (!expect(".func")) {
      return false;
    }
    if (!f.is_entry && is("(") && !parse_param_list(&f, &f.rets)) return false;
    if (!peek().word) return fail("expected a function name");
    f.name = peek().s;
    ++pos_;
    if (is("(") && !parse_param_list(&f, &f.params)) return false;
    // Launch-bound directives: recorded and checked at launch (a launch beyond .maxntid fails on
    // a GPU); occupancy hints change nothing a thread computes.
    for (;;) {
      if (is(".maxntid") || is(".reqntid")) {
        f.reqntid = peek().s == ".reqntid";
        ++pos_;
        for (int k = 0; k < 3; ++k) {
          uint64_t v = 0;
          if (!number(&v)) return false;
          f.maxntid[k] = static_cast<uint32_t>(v);
          if (!take(",")) {
            for (int j = k + 1; j < 3; ++j) f.maxntid[j] = 1;
            break;
          }
        }
      } else if (is(".minnctapersm") || is(".maxnreg")) {
        ++pos_;
        uint64_t v = 0;
        if (!number(&v)) return false;
      } else if (take(".noreturn")) {
      } else {
        break;
      }
    }
    if (prog_->by_name.count(f.name)) {
      // A prototype followed by its definition: the definition replaces the prototype.
      Function& old = prog_->functions[prog_->by_name[f.name]];
      if (old.has_body) return fail("function '" + f.name + "' defined twice", header_line);
    }
    if (take(";")) {
      if (!prog_->by_name.count(f.name)) {
        prog_->by_name[f.name] = static_cast<uint32_t>(prog_->functions.size());
        prog_->functions.push_back(std::move(f));
      }
      return true;
    }
    if (is_extern) return fail("an .extern function with a body", header_line);
    uint32_t index;
    if (prog_->by_name.count(f.name)) {
      index = prog_->by_name[f.name];
    } else {
      index = static_cast<uint32_t>(prog_->functions.size());
      prog_->by_name[f.name] = index;
      prog_->functions.emplace_back();
    }
    if (!parse_body(&f, index)) return false;
    f.has_body = true;
    prog_->functions[index] = std::move(f);
    return true;
  }

  // ---- function bodies ----------------------------------------------------------------------
  uint32_t new_slot(Function* f, uint64_t value) {
    f->init.push_back(value);
    return static_cast<uint32_t>(f->init.size() - 1);
  }

  uint32_t const_slot(Function* f, uint64_t value) {
    auto it = consts_.find(value);
    if (it != consts_.end()) return it->second;
    uint32_t s = new_slot(f, value);
    consts_[value] = s;
    return s;
  }

  const Reg* find_reg(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto r = it->regs.find(name);
      if (r != it->regs.end()) return &r->second;
    }
    return nullptr;
  }
  const ParamDecl* find_param(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto p = it->params.find(name);
      if (p != it->params.end()) return &p->second;
    }
    return nullptr;
  }

  bool parse_body(Function* f, uint32_t index) {
    f->init.assign(kFirstFreeSlot, 0);
    f->init[kSlotTrue] = 1;
    consts_.clear();
    consts_[0] = kSlotZero;
    consts_[1] = kSlotTrue;
    labels_.clear();
    fixups_.clear();
    scopes_.clear();
    scopes_.emplace_back();
    for (const ParamDecl& p : f->params) scopes_.back().params[p.name] = p;
    for (const ParamDecl& p : f->rets) scopes_.back().params[p.name] = p;
    if (!expect("{")) return false;
    size_t depth = 1;
    scopes_.emplace_back();
    while (depth > 0) {
      if (at_end()) return fail("function '" + f->name + "' has no closing brace");
      if (take("{")) {
        ++depth;
        scopes_.emplace_back();
      } else if (take("}")) {
        --depth;
        scopes_.pop_back();
      } else if (peek().word && is(":", 1)) {
        if (labels_.count(peek().s)) return fail("label defined twice");
        labels_[peek().s] = static_cast<uint32_t>(f->code.size());
        pos_ += 2;
      } else if (is(".reg")) {
        if (!parse_reg_decl(f)) return false;
      } else if (is(".param")) {
        ParamDecl p;
        uint32_t l = line();
        if (!parse_param_decl(&p) || !expect(";")) return false;
        place_param(f, &p);
        if (scopes_.back().params.count(p.name)) return fail("parameter declared twice", l);
        scopes_.back().params[p.name] = p;
      } else if (is(".pragma")) {
        // "nounroll" and the like: directions to ptxas's optimizer, nothing a thread computes.
        ++pos_;
        if (!peek().word || peek().s[0] != '"') return fail("expected a pragma string");
        ++pos_;
        if (!expect(";")) return false;
      } else if (peek().word && peek().s[0] == '.') {
        return fail("unsupported directive '" + peek().s +
                    "' (the fake models registers, parameters and global memory only)");
      } else {
        if (!parse_instruction(f, index)) return false;
      }
    }
    for (const auto& fix : fixups_) {
      auto it = labels_.find(fix.second.first);
      if (it == labels_.end())
        return fail("unknown label '" + fix.second.first + "'", fix.second.second);
      f->code[fix.first].imm = it->second;
    }
    // A function that runs off its end returns (ptxas would require the ret; be strict).
    Inst end;
    end.op = key(f->is_entry ? kExit : kRet, kPred);
    f->code.push_back(end);
    f->lines.push_back(line());
    f->texts.push_back("<end of " + f->name + ">");
    return true;
  }

  bool parse_reg_decl(Function* f) {
    ++pos_;  // .reg
    Ty t;
    if (!peek().word || peek().s[0] != '.' || !parse_type(peek().s.substr(1), &t)) {
      return fail("unsupported register type '" + peek().s + "'");
    }
    ++pos_;
    do {
      if (!peek().word) return fail("expected a register name");
      std::string name = peek().s;
      ++pos_;
      if (take("<")) {
        uint64_t count = 0;
        if (!number(&count) || !expect(">")) return false;
        for (uint64_t k = 0; k < count; ++k) {
          scopes_.back().regs[name + std::to_string(k)] = {new_slot(f, 0), t};
        }
      } else {
        scopes_.back().regs[name] = {new_slot(f, 0), t};
      }
    } while (take(","));
    return expect(";");
  }

  bool parse_operand(Operand* op) {
    if (take("[")) {
      op->kind = Operand::kAddress;
      if (!peek().word) return fail("bad address");
      Literal lit;
      if (parse_literal(peek().s, &lit) && lit.kind == Literal::kInt) {
        op->base.clear();
        op->offset = static_cast<int64_t>(lit.bits);
        ++pos_;
        return expect("]");
      }
      op->base = peek().s;
      ++pos_;
      if (take("+") || (peek().word && peek().s[0] == '-')) {
        if (!peek().word || !parse_literal(peek().s, &lit) || lit.kind != Literal::kInt) {
          return fail("bad address offset");
        }
        op->offset = static_cast<int64_t>(lit.bits);
        ++pos_;
      }
      return expect("]");
    }
    if (is("{") || is("(")) {
      bool vec = is("{");
      op->kind = vec ? Operand::kVector : Operand::kList;
      ++pos_;
      const char* close = vec ? "}" : ")";
      if (!take(close)) {
        do {
          if (!peek().word) return fail("bad operand list");
          op->words.push_back(peek().s);
          ++pos_;
        } while (take(","));
        if (!expect(close)) return false;
      }
      return true;
    }
    if (is("!")) return fail("negated predicate operands are not supported");
    if (!peek().word) return fail("expected an operand, found '" + peek().s + "'");
    op->kind = Operand::kWord;
    op->words.push_back(peek().s);
    ++pos_;
    if (take("|")) {
      if (!peek().word) return fail("expected a second predicate");
      op->words.push_back(peek().s);
      ++pos_;
    }
    return true;
  }

  // A source operand read as type `t`: a register, a special register or an immediate.
  bool source(Function* f, const Operand& op, Ty t, uint32_t* slot) {
    if (op.kind != Operand::kWord || op.words.size() != 1) return fail("expected a value operand");
    const std::string& w = op.words[0];
    if (w[0] == '%') {
      static const std::map<std::string, uint32_t> specials = {
          {"%tid.x", kSlotTid},           {"%tid.y", kSlotTid + 1},
          {"%tid.z", kSlotTid + 2},       {"%ntid.x", kSlotNtid},
          {"%ntid.y", kSlotNtid + 1},     {"%ntid.z", kSlotNtid + 2},
          {"%ctaid.x", kSlotCtaid},       {"%ctaid.y", kSlotCtaid + 1},
          {"%ctaid.z", kSlotCtaid + 2},   {"%nctaid.x", kSlotNctaid},
          {"%nctaid.y", kSlotNctaid + 1}, {"%nctaid.z", kSlotNctaid + 2}};
      auto sp = specials.find(w);
      if (sp != specials.end()) {
        *slot = sp->second;
        return true;
      }
    }
    if (const Reg* r = find_reg(w)) {
      if ((r->type == kPred) != (t == kPred))
        return fail("register '" + w + "' has the wrong kind");
      *slot = r->slot;
      return true;
    }
    Literal lit;
    if (!parse_literal(w, &lit)) return fail("unknown register or bad immediate '" + w + "'");
    uint64_t v = lit.bits;
    if (t == kF32) {
      if (lit.kind == Literal::kF64Bits) {
        double d;
        std::memcpy(&d, &lit.bits, 8);
        v = f32_bits_of(static_cast<float>(d));
      } else if (lit.kind == Literal::kDecimal) {
        v = f32_bits_of(static_cast<float>(lit.decimal));
      } else if (lit.kind == Literal::kInt) {
        return fail("an integer immediate for a .f32 operand");
      }
    } else if (t == kF64) {
      if (lit.kind == Literal::kF32Bits) {
        float fl;
        uint32_t u = static_cast<uint32_t>(lit.bits);
        std::memcpy(&fl, &u, 4);
        v = f64_bits_of(fl);
      } else if (lit.kind == Literal::kDecimal) {
        v = f64_bits_of(lit.decimal);
      } else if (lit.kind == Literal::kInt) {
        return fail("an integer immediate for a .f64 operand");
      }
    } else if (t == kPred) {
      return fail("an immediate predicate");
    } else if (lit.kind == Literal::kDecimal) {
      return fail("a decimal floating-point immediate for an integer operand");
    }
    *slot = const_slot(f, v);
    return true;
  }

  bool dest(const Operand& op, Ty t, uint32_t* slot, Ty* reg_type = nullptr) {
    if (op.kind != Operand::kWord || op.words.size() != 1) return fail("expected a register");
    const Reg* r = find_reg(op.words[0]);
    if (!r) return fail("unknown destination register '" + op.words[0] + "'");
    if ((r->type == kPred) != (t == kPred)) {
      return fail("register '" + op.words[0] + "' has the wrong kind");
    }
    *slot = r->slot;
    if (reg_type) *reg_type = r->type;
    return true;
  }

  // ---- instructions -------------------------------------------------------------------------
  struct Mods {
    std::vector<std::string> list;
    std::vector<bool> used;
    bool take(const std::string& m) {
      for (size_t i = 0; i < list.size(); ++i) {
        if (!used[i] && list[i] == m) {
          used[i] = true;
          return true;
        }
      }
      return false;
    }
    // The last unused type modifier (cvt takes two: destination first).
    bool type(Ty* t) {
      for (size_t i = 0; i < list.size(); ++i) {
        if (!used[i] && parse_type(list[i], t)) {
          used[i] = true;
          return true;
        }
      }
      return false;
    }
    Rnd rnd() {
      static const char* names[] = {"", "rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi"};
      for (int r = 1; r <= 8; ++r) {
        if (take(names[r])) return static_cast<Rnd>(r);
      }
      return kRndNone;
    }
    std::string leftover() const {
      for (size_t i = 0; i < list.size(); ++i) {
        if (!used[i]) return list[i];
      }
      return "";
    }
  };

  bool parse_instruction(Function* f, uint32_t findex) {
    Inst in;
    uint32_t l = line();
    if (take("@")) {
      bool neg = take("!");
      if (!peek().word) return fail("expected a guard predicate");
      const Reg* r = find_reg(peek().s);
      if (!r || r->type != kPred) return fail("guard '" + peek().s + "' is not a predicate");
      in.guard = r->slot;
      in.guard_neg = neg;
      ++pos_;
    }
    if (!peek().word) return fail("expected an instruction");
    std::string opcode = peek().s;
    ++pos_;
    std::vector<Operand> ops;
    if (!is(";")) {
      do {
        ops.emplace_back();
        if (!parse_operand(&ops.back())) return false;
      } while (take(","));
    }
    if (!expect(";")) return false;
    std::vector<std::string> parts = split(opcode, '.');
    Mods m;
    m.list.assign(parts.begin() + 1, parts.end());
    m.used.assign(m.list.size(), false);
    std::string text = l >= 1 && l <= lines_.size() ? lines_[l - 1] : opcode;
    size_t first = text.find_first_not_of(" \t");
    text = first == std::string::npos ? opcode : text.substr(first);
    stmt_line_ = l;
    bool decoded = decode(f, findex, parts[0], m, ops, &in, l);
    stmt_line_ = 0;
    if (!decoded) return false;
    std::string extra = m.leftover();
    if (!extra.empty()) return fail("unsupported modifier '." + extra + "' of " + parts[0], l);
    f->code.push_back(in);
    f->lines.push_back(l);
    f->texts.push_back(text);
    return true;
  }

  bool want(const std::vector<Operand>& ops, size_t n, uint32_t l) {
    if (ops.size() != n) {
      return fail(
          "expected " + std::to_string(n) + " operands, found " + std::to_string(ops.size()), l);
    }
    return true;
  }

  bool need_type(Mods& m, Ty* t, uint32_t l) {
    if (!m.type(t)) return fail("missing type", l);
    return true;
  }

  // d, a[, b[, c]] with every operand of type `t` (unless told otherwise).
  bool regs3(Function* f, const std::vector<Operand>& ops, size_t n, Ty t, Inst* in, uint32_t l,
             Ty tb = kTyCount, Ty tc = kTyCount) {
    if (!want(ops, n, l)) return false;
    if (!dest(ops[0], t, &in->d)) return false;
    if (n > 1 && !source(f, ops[1], t, &in->a)) return false;
    if (n > 2 && !source(f, ops[2], tb == kTyCount ? t : tb, &in->b)) return false;
    if (n > 3 && !source(f, ops[3], tc == kTyCount ? t : tc, &in->c)) return false;
    return true;
  }

  bool float_rnd(Mods& m, Inst* in, bool required, uint32_t l) {
    Rnd r = m.rnd();
    if (r > kRp) return fail("integer rounding on a floating-point operation", l);
    if (r == kRndNone && required) return fail("missing rounding modifier", l);
    in->rnd = r == kRndNone ? kRn : r;
    return true;
  }

  bool decode(Function* f, uint32_t findex, const std::string& op, Mods& m,
              const std::vector<Operand>& ops, Inst* in, uint32_t l) {
    Ty t = kU32;
    auto set = [&](Fam fam, Ty ty) { in->op = key(fam, ty); };
    auto ftz_sat = [&](bool sat_ok) {
      if (m.take("ftz")) in->flags |= kFtz;
      if (sat_ok && m.take("sat")) in->flags |= kSat;
    };
    // Integer operations whose result does not depend on signedness.
    auto int_only = [&](Ty ty, bool keep_sign) -> bool {
      if (!is_int(ty) || ty_bits(ty) < 16) return fail("unsupported type for " + op, l);
      t = keep_sign ? int_of(ty) : unsigned_of(ty);
      return true;
    };
    if (op == "add" || op == "sub" || op == "mul" || op == "mad" || op == "fma" || op == "div" ||
        op == "rem" || op == "min" || op == "max" || op == "abs" || op == "neg") {
      Ty ty;
      // Width modifiers of integer mul/mad come before the type; take them first.
      bool lo = m.take("lo"), hi = m.take("hi"), wide = m.take("wide");
      if (!need_type(m, &ty, l)) return false;
      if (ty == kF32 || ty == kF64) {
        if (lo || hi || wide) return fail("integer width modifier on a float operation", l);
        size_t n = 3;
        if (op == "add" || op == "sub" || op == "mul") {
          if (!float_rnd(m, in, false, l)) return false;
          ftz_sat(ty == kF32);
          set(op == "add" ? kFAdd : op == "sub" ? kFSub : kFMul, ty);
        } else if (op == "fma" || op == "mad") {
          if (!float_rnd(m, in, true, l)) return false;
          ftz_sat(ty == kF32);
          set(kFFma, ty);
          n = 4;
        } else if (op == "div") {
          if (ty == kF32 && (m.take("approx") || m.take("full"))) {
            in->flags |= kApprox;
            in->rnd = kRn;
          } else if (!float_rnd(m, in, true, l)) {
            return false;
          }
          ftz_sat(false);
          set(kFDiv, ty);
        } else if (op == "min" || op == "max") {
          ftz_sat(false);
          if (m.take("NaN")) in->flags |= kNanMode;
          set(op == "min" ? kFMin : kFMax, ty);
        } else if (op == "abs" || op == "neg") {
          ftz_sat(false);
          set(op == "abs" ? kFAbs : kFNeg, ty);
          n = 2;
        } else {
          return fail("unsupported instruction " + op + " on floats", l);
        }
        return regs3(f, ops, n, ty, in, l);
      }
      if (ty == kF16 || ty == kBF16) return fail("16-bit float arithmetic is not supported", l);
      if (op == "fma") return fail("fma on integers", l);
      if (op == "mul" || op == "mad") {
        if (lo + hi + wide != 1) return fail("integer mul/mad needs one of .lo/.hi/.wide", l);
        if (!int_only(ty, hi || wide)) return false;
        if (wide && ty_bits(t) == 64) return fail(".wide on a 64-bit type", l);
        Fam fam = op == "mul" ? (lo   ? kMulLo
                                 : hi ? kMulHi
                                      : kMulWide)
                              : (lo   ? kMadLo
                                 : hi ? kMadHi
                                      : kMadWide);
        set(fam, t);
        Ty wt = wide ? (ty_signed(t) ? (ty_bits(t) == 16 ? kS32 : kS64)
                                     : (ty_bits(t) == 16 ? kU32 : kU64))
                     : t;
        size_t n = op == "mul" ? 3 : 4;
        if (!want(ops, n, l) || !dest(ops[0], wt, &in->d) || !source(f, ops[1], t, &in->a) ||
            !source(f, ops[2], t, &in->b)) {
          return false;
        }
        return n == 3 || source(f, ops[3], wt, &in->c);
      }
      if (lo || hi || wide) return fail(".lo/.hi/.wide on " + op, l);
      bool sign_matters = op == "div" || op == "rem" || op == "min" || op == "max" || op == "abs";
      if (!int_only(ty, sign_matters)) return false;
      if (op == "abs" && !ty_signed(t)) return fail("abs needs a signed type", l);
      if (op == "neg" && !ty_signed(int_of(ty))) return fail("neg needs a signed type", l);
      static const std::map<std::string, Fam> fams = {{"add", kAdd}, {"sub", kSub}, {"div", kDiv},
                                                      {"rem", kRem}, {"min", kMin}, {"max", kMax},
                                                      {"abs", kAbs}, {"neg", kNeg}};
      set(fams.at(op), t);
      return regs3(f, ops, op == "abs" || op == "neg" ? 2 : 3, t, in, l);
    }
    if (op == "and" || op == "or" || op == "xor" || op == "not" || op == "cnot") {
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      if (ty == kPred) {
        t = kPred;
      } else if (ty == kB16 || ty == kB32 || ty == kB64) {
        t = unsigned_of(ty);
      } else {
        return fail("logic operations take .pred or .b16/.b32/.b64", l);
      }
      static const std::map<std::string, Fam> fams = {
          {"and", kAnd}, {"or", kOr}, {"xor", kXor}, {"not", kNot}, {"cnot", kCnot}};
      set(fams.at(op), t);
      return regs3(f, ops, op == "not" || op == "cnot" ? 2 : 3, t, in, l);
    }
    if (op == "shl" || op == "shr") {
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      if (!is_int(ty) || ty_bits(ty) < 16 ||
          (op == "shl" && ty != kB16 && ty != kB32 && ty != kB64)) {
        return fail("unsupported type for " + op, l);
      }
      t = op == "shl" ? unsigned_of(ty) : int_of(ty);
      set(op == "shl" ? kShl : kShr, t);
      return regs3(f, ops, 3, t, in, l, kU32);  // the shift amount is always .u32
    }
    if (op == "bfe") {
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      if (ty != kU32 && ty != kS32 && ty != kU64 && ty != kS64) return fail("bfe type", l);
      set(kBfe, ty);
      return regs3(f, ops, 4, ty, in, l, kU32, kU32);
    }
    if (op == "popc" || op == "clz") {
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      if (ty != kB32 && ty != kB64) return fail(op + " takes .b32 or .b64", l);
      set(op == "popc" ? kPopc : kClz, unsigned_of(ty));
      if (!want(ops, 2, l) || !dest(ops[0], kU32, &in->d)) return false;
      return source(f, ops[1], unsigned_of(ty), &in->a);
    }
    if (op == "sqrt" || op == "rcp" || op == "ex2" || op == "lg2") {
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      if (ty != kF32 && ty != kF64) return fail(op + " needs .f32 or .f64", l);
      if (m.take("approx")) {
        in->flags |= kApprox;
        in->rnd = kRn;
        if (ty == kF64 && !(op == "rcp" || op == "sqrt")) return fail(op + ".approx.f64", l);
      } else {
        if (op == "ex2" || op == "lg2") return fail(op + " needs .approx", l);
        if (!float_rnd(m, in, true, l)) return false;
      }
      ftz_sat(false);
      set(op == "sqrt" ? kFSqrt : op == "rcp" ? kFRcp : op == "ex2" ? kFEx2 : kFLg2, ty);
      return regs3(f, ops, 2, ty, in, l);
    }
    if (op == "setp") {
      static const std::map<std::string, Cmp> cmps = {
          {"eq", kEq},   {"ne", kNe},   {"lt", kLt},   {"le", kLe},   {"gt", kGt},   {"ge", kGe},
          {"lo", kLt},   {"ls", kLe},   {"hi", kGt},   {"hs", kGe},   {"equ", kEqu}, {"neu", kNeu},
          {"ltu", kLtu}, {"leu", kLeu}, {"gtu", kGtu}, {"geu", kGeu}, {"num", kNum}, {"nan", kNan}};
      bool found = false;
      for (const auto& c : cmps) {
        if (m.take(c.first)) {
          in->ty2 = c.second;
          found = true;
          break;
        }
      }
      if (!found) return fail("setp without a comparison", l);
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      ftz_sat(false);
      if (m.take("and") || m.take("or") || m.take("xor")) {
        return fail("setp with a combining predicate is not supported", l);
      }
      if (ty == kF16 || ty == kBF16 || ty == kPred || ty_bits(ty) < 16) {
        return fail("unsupported setp type", l);
      }
      bool lohs = false;
      for (const char* u : {"lo", "ls", "hi", "hs"})
        lohs |= std::find(m.list.begin(), m.list.end(), u) != m.list.end();
      if (ty_float(ty)) {
        t = ty;
        if (lohs) return fail("lo/ls/hi/hs on floats", l);
      } else {
        if (in->ty2 > kGe) return fail("unordered comparison on integers", l);
        bool bit = ty == kB16 || ty == kB32 || ty == kB64;
        if (bit && in->ty2 != kEq && in->ty2 != kNe) return fail("ordering a .b type", l);
        t = lohs ? unsigned_of(ty) : int_of(ty);
      }
      set(kSetp, t);
      if (!want(ops, 3, l)) return false;
      if (ops[0].kind != Operand::kWord) return fail("setp destination", l);
      Operand p = ops[0];
      if (p.words.size() == 2) {
        Operand q = p;
        q.words = {p.words[1]};
        p.words.resize(1);
        if (!dest(q, kPred, &in->e)) return false;
        in->flags |= kSecondDest;
      }
      return dest(p, kPred, &in->d) && source(f, ops[1], t, &in->a) && source(f, ops[2], t, &in->b);
    }
    if (op == "selp") {
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      if (ty_bits(ty) < 16 || ty == kF16 || ty == kBF16) return fail("unsupported selp type", l);
      set(kSelp, ty == kF32 || ty == kF64 ? ty : unsigned_of(ty));
      return regs3(f, ops, 4, ty, in, l, ty, kPred);
    }
    if (op == "mov" || op == "cvta") {
      if (op == "cvta") {
        // Generic and global addresses are both host addresses in the fake.
        bool to = m.take("to");
        if (!m.take("global")) return fail("cvta to or from a state space other than .global", l);
        (void)to;
      }
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      if (op == "cvta" && ty != kU64) return fail("cvta needs .u64", l);
      if (!want(ops, 2, l)) return false;
      if (ty == kF16 || ty == kBF16) ty = kB16;
      t = ty == kPred || ty == kF32 || ty == kF64 ? ty : unsigned_of(ty);
      if (ops[0].kind == Operand::kVector || ops[1].kind == Operand::kVector) {
        if (ty != kB32 && ty != kB64) return fail("vector mov needs .b32 or .b64", l);
        Ty half = ty == kB64 ? kU32 : kU16;
        bool unpack = ops[0].kind == Operand::kVector;
        const Operand& v = unpack ? ops[0] : ops[1];
        if (v.words.size() != 2) return fail("only two-part vector mov is supported", l);
        Operand lo_op, hi_op;
        lo_op.words = {v.words[0]};
        hi_op.words = {v.words[1]};
        set(unpack ? kUnpack2 : kPack2, t);
        if (unpack) {
          return dest(lo_op, half, &in->d) && dest(hi_op, half, &in->e) &&
                 source(f, ops[1], t, &in->a);
        }
        return dest(ops[0], t, &in->d) && source(f, lo_op, half, &in->a) &&
               source(f, hi_op, half, &in->b);
      }
      set(kMov, t);
      return regs3(f, ops, 2, t, in, l);
    }
    if (op == "cvt") {
      Rnd r = m.rnd();
      ftz_sat(true);
      Ty dt, st;
      if (!m.type(&dt) || !m.type(&st)) return fail("cvt needs two types", l);
      if (dt == kPred || st == kPred) return fail("cvt of a predicate", l);
      in->rnd = r;
      bool df = ty_float(dt), sf = ty_float(st);
      Ty d_norm = df ? dt : int_of(dt), s_norm = sf ? st : int_of(st);
      in->ty2 = s_norm;
      if (!df && !sf) {
        if (r != kRndNone) return fail("rounding modifier on an integer conversion", l);
        if (in->flags & kFtz) return fail(".ftz on an integer conversion", l);
        set(kCvtII, d_norm);
      } else if (df && !sf) {
        if (r == kRndNone || r > kRp) return fail("int-to-float cvt needs .rn/.rz/.rm/.rp", l);
        set(kCvtIF, d_norm);
      } else if (!df && sf) {
        if (r < kRni) return fail("float-to-int cvt needs .rni/.rzi/.rmi/.rpi", l);
        if (in->flags & kSat) in->flags &= static_cast<uint8_t>(~kSat);  // always saturating
        set(kCvtFI, d_norm);
      } else {
        int db = ty_bits(dt), sb = ty_bits(st);
        if (dt == st || (dt != kF64 && db > sb) || (db == sb)) {
          // Same type (an integer rounding, or .ftz/.sat alone), or exact widening.
          if (dt == st && r != kRndNone && r < kRni) return fail("cvt.frnd between equal types", l);
          if (dt != st && r != kRndNone) return fail("rounding on a widening cvt", l);
          if (dt != st && db == sb) return fail("cvt between f16 and bf16", l);
          if (dt == st && (dt == kF16 || dt == kBF16)) return fail("16-bit float rounding", l);
        } else if (dt == kF64) {
          if (r != kRndNone) return fail("rounding on a widening cvt", l);
        } else {
          if (r == kRndNone || r > kRp) return fail("narrowing cvt needs .rn/.rz/.rm/.rp", l);
        }
        set(kCvtFF, dt);
      }
      if ((in->flags & kFtz) && !(dt == kF32 || st == kF32)) return fail(".ftz without .f32", l);
      Ty dreg = dt, sreg = st;  // 16-bit floats live in .b16 registers
      if (dreg == kF16 || dreg == kBF16) dreg = kU16;
      if (sreg == kF16 || sreg == kBF16) sreg = kU16;
      if (!want(ops, 2, l)) return false;
      Ty rt;
      if (!dest(ops[0], dreg, &in->d, &rt) || !source(f, ops[1], sreg, &in->a)) return false;
      if (ty_bits(rt) < ty_bits(dreg)) return fail("destination register narrower than the cvt", l);
      in->reg_bits = static_cast<uint8_t>(ty_bits(rt));
      return true;
    }
    if (op == "ld" || op == "st") {
      bool is_ld = op == "ld";
      bool param = m.take("param");
      bool global = m.take("global");
      if (!param && !global) {
        for (const char* sp : {"shared", "local", "const", "tex"}) {
          if (m.take(sp))
            return fail(std::string("the .") + sp + " state space is not supported", l);
        }
        global = true;  // generic: every generic address in the fake is a host (global) address
      }
      if (is_ld && m.take("nc")) {
        if (!global) return fail(".nc on a non-global load", l);
      }
      for (const char* cache : {"ca", "cg", "cs", "lu", "cv", "wb", "wt"}) m.take(cache);  // hints
      if (m.take("volatile") || m.take("relaxed") || m.take("acquire") || m.take("release")) {
        return fail("memory-ordering qualifiers are not supported", l);
      }
      uint8_t count = 1;
      if (m.take("v2")) count = 2;
      if (m.take("v4")) count = 4;
      Ty ty;
      if (!need_type(m, &ty, l)) return false;
      if (ty == kPred) return fail("ld/st of a predicate", l);
      Ty access = ty == kF16 || ty == kBF16 ? kU16 : (ty_float(ty) ? ty : int_of(ty));
      in->count = count;
      if (!want(ops, 2, l)) return false;
      const Operand& addr = is_ld ? ops[1] : ops[0];
      const Operand& val = is_ld ? ops[0] : ops[1];
      if (addr.kind != Operand::kAddress) return fail("expected an address", l);
      if (param) {
        if (count != 1) return fail("vector parameter access", l);
        const ParamDecl* p = find_param(addr.base);
        if (!p) return fail("unknown parameter '" + addr.base + "'", l);
        int64_t off = addr.offset;
        if (off < 0 || off + ty_bits(ty) / 8 > p->size)
          return fail("parameter access out of bounds", l);
        in->imm = p->offset + off;
        set(is_ld ? kLdParam : kStParam, access);
      } else {
        if (addr.base.empty()) {
          in->a = kSlotZero;
        } else {
          const Reg* r = find_reg(addr.base);
          if (!r)
            return fail("address '" + addr.base +
                            "' is not a register (module variables are not supported)",
                        l);
          if (ty_bits(r->type) != 64) return fail("a 32-bit address register", l);
          in->a = r->slot;
        }
        in->imm = addr.offset;
        set(is_ld ? kLdGlobal : kStGlobal, access);
      }
      std::vector<std::string> names;
      if (count == 1) {
        if (val.kind == Operand::kVector) return fail("a vector operand for a scalar access", l);
        if (val.kind != Operand::kWord || val.words.size() != 1)
          return fail("expected a register", l);
        names = val.words;
      } else {
        if (val.kind != Operand::kVector || val.words.size() != count)
          return fail("vector size", l);
        names = val.words;
      }
      for (size_t k = 0; k < names.size(); ++k) {
        Operand o;
        o.words = {names[k]};
        uint32_t s;
        Ty rt = access;
        if (is_ld) {
          if (!dest(o, access, &s, &rt)) return false;
          if (ty_bits(rt) < ty_bits(access) && !(rt == kPred))
            return fail("destination register narrower than the load", l);
          if (k == 0) in->reg_bits = static_cast<uint8_t>(ty_bits(rt));
          if (ty_bits(rt) != in->reg_bits) return fail("vector registers of different widths", l);
          if (ty_signed(access)) in->flags |= kSignExt;
        } else if (!source(f, o, access, &s)) {
          return false;
        }
        if (count == 1) {
          (is_ld ? in->d : in->b) = s;
        } else {
          in->v[k] = s;
        }
      }
      return true;
    }
    if (op == "bra") {
      m.take("uni");
      set(kBra, kPred);
      if (!want(ops, 1, l) || ops[0].kind != Operand::kWord) return fail("bra needs a label", l);
      fixups_.push_back({static_cast<uint32_t>(f->code.size()), {ops[0].words[0], l}});
      return true;
    }
    if (op == "ret" || op == "exit" || op == "trap") {
      m.take("uni");
      if (!ops.empty()) return fail(op + " takes no operands", l);
      set(op == "ret" ? (f->is_entry ? kExit : kRet) : op == "exit" ? kExit : kTrap, kPred);
      return true;
    }
    if (op == "call") {
      m.take("uni");
      size_t i = 0;
      PendingCall pc;
      pc.function = findex;
      pc.line = l;
      if (i < ops.size() && ops[i].kind == Operand::kList) {
        for (const std::string& w : ops[i].words) {
          const ParamDecl* p = find_param(w);
          if (!p) return fail("call return '" + w + "' is not a declared parameter", l);
          pc.rets.push_back(*p);
        }
        ++i;
      }
      if (i >= ops.size() || ops[i].kind != Operand::kWord)
        return fail("call needs a function name", l);
      pc.callee = ops[i].words[0];
      ++i;
      if (i < ops.size() && ops[i].kind == Operand::kList) {
        for (const std::string& w : ops[i].words) {
          const ParamDecl* p = find_param(w);
          if (!p)
            return fail("call argument '" + w +
                            "' is not a declared parameter (register arguments are not supported)",
                        l);
          pc.args.push_back(*p);
        }
        ++i;
      }
      if (i != ops.size()) return fail("unsupported call form (indirect calls, prototypes)", l);
      set(kCall, kPred);
      in->imm = static_cast<int64_t>(f->calls.size());
      pc.site = static_cast<uint32_t>(f->calls.size());
      f->calls.emplace_back();
      calls_.push_back(pc);
      return true;
    }
    if (op == "bar" || op == "barrier" || op == "atom" || op == "red" || op == "shfl" ||
        op == "vote" || op == "membar" || op == "fence") {
      return fail("'" + op + "' is not supported: the fake runs threads one after another", l);
    }
    return fail("unknown instruction '" + op + "'", l);
  }

  bool resolve_calls() {
    for (const PendingCall& pc : calls_) {
      auto it = prog_->by_name.find(pc.callee);
      if (it == prog_->by_name.end())
        return fail("call of unknown function '" + pc.callee + "'", pc.line);
      const Function& callee = prog_->functions[it->second];
      if (callee.is_entry) return fail("call of an entry", pc.line);
      if (!callee.has_body) return fail("call of '" + pc.callee + "', which has no body", pc.line);
      if (callee.params.size() != pc.args.size() || callee.rets.size() != pc.rets.size()) {
        return fail("call of '" + pc.callee + "' with the wrong number of parameters", pc.line);
      }
      CallSite& site = prog_->functions[pc.function].calls[pc.site];
      site.callee = it->second;
      for (size_t k = 0; k < pc.args.size(); ++k) {
        if (pc.args[k].size != callee.params[k].size)
          return fail("argument size mismatch", pc.line);
        site.args.push_back({pc.args[k].offset, callee.params[k].offset, pc.args[k].size});
      }
      for (size_t k = 0; k < pc.rets.size(); ++k) {
        if (pc.rets[k].size != callee.rets[k].size) return fail("return size mismatch", pc.line);
        site.rets.push_back({callee.rets[k].offset, pc.rets[k].offset, pc.rets[k].size});
      }
    }
    for (const Function& fn : prog_->functions) {
      if (fn.is_entry && !fn.has_body) return fail("entry '" + fn.name + "' has no body", 1);
    }
    return true;
  }

  Program* prog_;
  std::vector<std::string> lines_;
  std::vector<Tok> toks_;
  size_t pos_ = 0;
  uint32_t stmt_line_ = 0;  // the line of the instruction being decoded, for its errors
  std::string error_;
  std::unordered_map<uint64_t, uint32_t> consts_;
  std::unordered_map<std::string, uint32_t> labels_;
  std::vector<std::pair<uint32_t, std::pair<std::string, uint32_t>>> fixups_;
  std::vector<Scope> scopes_;
  std::vector<PendingCall> calls_;
};

}  // namespace

bool parse_program(const std::string& text, Program* out, std::string* error) {
  Parser p(text, out);
  return p.run(text, error);
}

}  // namespace fakecuda::ptx
