/* Builds Debian's node-llhttp source http.c (found by configure, not copied into the tree). */
#include <http.c>
