#include "harness.h"
void register_reduce_tests(void) {}
