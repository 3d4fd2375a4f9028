#include "harness.h"
void register_norm_tests(void) {}
