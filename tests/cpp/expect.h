// EXPECT(cond, printf-style message) for the host C++ tests of tests/cpp/: counts a failure and prints
// the first 20; report() prints "all passed" (what tests/cpp_host.py looks for) and returns main's status.
#pragma once

#include <cstdio>

static int failures = 0;

#define EXPECT(cond, ...)                 \
  do {                                      \
    if (!(cond)) {                          \
      if (++failures <= 20) {               \
        std::printf("FAIL %s: ", #cond);    \
        std::printf(__VA_ARGS__);           \
        std::printf("\n");                  \
      }                                     \
    }                                       \
  } while (0)

inline int report() {
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("all passed\n");
  return 0;
}
