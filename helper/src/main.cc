// envcryptctl: see cli.h and Documentation/admin-guide/envcryptctl.8.
#include <iostream>

#include "cli.h"

int main(int argc, char** argv) { return envcrypt::run_cli(argc, argv, std::cout, std::cerr); }
