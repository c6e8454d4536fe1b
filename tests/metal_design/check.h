// The plain C++ plan tests' one assertion: CHECK(cond, printf-style message) prints and counts a
// failure; the test's main returns `failures != 0`.
#pragma once
#include <cstdio>

static int failures = 0;
#define CHECK(cond, ...)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      std::printf("FAIL %s:%d %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                  \
      std::printf("\n");                                         \
      ++failures;                                                \
    }                                                            \
  } while (0)
