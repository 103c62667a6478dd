#include <cstdio>
int main() { std::puts("lamina"); return 0; }
