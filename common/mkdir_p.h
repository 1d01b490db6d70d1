/*
 * mkdir_p: create a directory and its missing parents (mode 0755), as
 * `mkdir -p` does; directories that exist already are fine.
 *
 * Errors: 0, or -1 with "cannot create '<the part that failed>': <errno
 * text>" in @err.
 */
#ifndef RINGMQ_MKDIR_P_H
#define RINGMQ_MKDIR_P_H

#include <stddef.h>

int mkdir_p(const char *path, char *err, size_t errlen);

#endif
