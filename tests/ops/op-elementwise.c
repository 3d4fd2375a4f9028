#include "harness.h"
void register_elementwise_tests(void) {}
