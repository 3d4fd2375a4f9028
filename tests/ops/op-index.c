#include "harness.h"
void register_index_tests(void) {}
