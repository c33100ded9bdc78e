/* Builds Debian's node-llhttp source llhttp.c (found by configure, not copied into the tree). */
#include <llhttp.c>
