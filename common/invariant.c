/* invariant: see invariant.h. */
#include "common/invariant.h"

#include <stdio.h>
#include <stdlib.h>

void invariant_failed(const char *cond, const char *file, int line)
{
    /* straight to stderr: the logger may be what is broken */
    fprintf(stderr, "ringmq: invariant broken at %s:%d: %s\n", file, line,
            cond);
    fflush(stderr);
    abort();
}
