#include "harness.h"
void register_layout_tests(void) {}
