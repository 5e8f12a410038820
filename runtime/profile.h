/* profile.h — where one optimizer step's GPU time goes (runtime --bench --profile): each op timed
 * with device events, then tables: time by op kind and phase, the slowest ops, the matrix products by
 * shape, and (GPU) every shape's candidate cuBLASLt algorithms timed against the one in use. */
#ifndef MF_PROFILE_H
#define MF_PROFILE_H
#include "backend.h"
#include <stdio.h>

/* Prints the tables to f; returns -1 (with a line saying why) on a backend that cannot time ops. */
int profile_print(Backend *b, FILE *f);
#endif
