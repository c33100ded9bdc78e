/* Builds Debian's node-llhttp source api.c (found by configure, not copied into the tree). */
#include <api.c>
