#include <cstdio>
int main() { std::puts("distill"); return 0; }
