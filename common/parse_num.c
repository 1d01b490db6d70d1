/* parse_num: see parse_num.h. */
#include "common/parse_num.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int parse_num_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9') { /* no sign, no spaces */
        return -1;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

int parse_num_size(const char *s, uint64_t *out)
{
    char digits[32];
    size_t n = s != NULL ? strlen(s) : 0;
    uint64_t mult = 1;
    uint64_t v;

    if (n == 0 || n >= sizeof(digits)) {
        return -1;
    }
    memcpy(digits, s, n + 1);
    switch (digits[n - 1]) {
    case 'k': case 'K': mult = 1024; break;
    case 'm': case 'M': mult = 1024 * 1024; break;
    case 'g': case 'G': mult = 1024ULL * 1024 * 1024; break;
    default: break;
    }
    if (mult != 1) {
        digits[n - 1] = '\0';
    }
    if (parse_num_u64(digits, &v) != 0 || v > UINT64_MAX / mult) {
        return -1;
    }
    *out = v * mult;
    return 0;
}
