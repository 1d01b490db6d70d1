/* random_id: see random_id.h. */
#include "common/random_id.h"

#include <sys/random.h>
#include <sys/types.h>
#include <unistd.h>

#include "common/clock.h"

void random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    uint64_t x;
    size_t i;

    if (getrandom(out, n, 0) == (ssize_t)n) {
        return;
    }
    x = clock_mono_ns() ^ clock_wall_ms() ^ ((uint64_t)getpid() << 32);
    for (i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (unsigned char)(x >> 56);
    }
}

uint64_t random_id_nonzero(void)
{
    uint64_t v;

    random_bytes(&v, sizeof(v));
    return v != 0 ? v : 1;
}
