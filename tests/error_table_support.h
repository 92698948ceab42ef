// What the error tables (test_errors.cpp, test_backward_errors.cpp) check of every refused call:
// it failed with the right code, and its message names what the row expects. Test-only; not
// part of the library.
#ifndef EMBAG_TESTS_ERROR_TABLE_SUPPORT_H_
#define EMBAG_TESTS_ERROR_TABLE_SUPPORT_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "embag/status.h"

namespace embag::errortest {

inline std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return s;
}

// `s` is a refusal: kInvalidArgument (or kUnsupported too, when `unsupported_allowed`), with
// every one of `fragments` in its message, case-insensitively.
inline void expect_refused(const Status& s, const std::vector<std::string>& fragments,
                           bool unsupported_allowed) {
  EXPECT_FALSE(s.ok());
  if (unsupported_allowed) {
    EXPECT_TRUE(s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kUnsupported)
        << "code " << static_cast<int>(s.code()) << ": " << s.message();
  } else {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.message();
  }
  for (const std::string& fragment : fragments) {
    EXPECT_NE(lower(s.message()).find(lower(fragment)), std::string::npos)
        << "message: " << s.message() << "\nexpected to contain: " << fragment;
  }
}

}  // namespace embag::errortest

#endif  // EMBAG_TESTS_ERROR_TABLE_SUPPORT_H_
