#include "uffd.h"
int cmd_serve(int argc, char **argv) { return 1; }
