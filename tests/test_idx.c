#include "harness.h"
int main(void) { return kt_finish(); }
