/*
 * parse_num: numbers as people write them in flags, config files and
 * commands: the whole string, decimal, no sign.
 *
 * Both return 0, or -1 (empty, a sign, trailing characters, overflow) with
 * *@out untouched on failure.
 */
#ifndef RINGMQ_PARSE_NUM_H
#define RINGMQ_PARSE_NUM_H

#include <stdint.h>

int parse_num_u64(const char *s, uint64_t *out);
/* A byte count with an optional k, m or g suffix (powers of 1024):
 * "1048576", "64k", "512m", "1g". */
int parse_num_size(const char *s, uint64_t *out);

#endif
