/* port_block: see port_block.h. */
#include "tests/unit/lib/port_block.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#define HELD_MAX 8

/* Blocks this process holds the lock of (the descriptors stay open). */
static unsigned held[HELD_MAX];
static unsigned n_held;

/* Free unless something listens on 0.0.0.0 or 127.0.0.1:@port (TIME_WAIT
 * leftovers do not count: the listeners under test reuse the address). */
static bool port_free(unsigned port)
{
    struct sockaddr_in a;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    if (fd < 0) {
        return false;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static bool block_free(unsigned base, unsigned size)
{
    unsigned i;

    for (i = 0; i < size && port_free(base + i); i++) {
    }
    return i == size;
}

/* Lock @base's file for the rest of the process's life; false when another
 * process holds it. */
static bool block_claim(unsigned base, unsigned size)
{
    char path[64];
    int fd;

    snprintf(path, sizeof(path), "/tmp/ringmq-test-port-%u-%u", base, size);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        return false;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return false;
    }
    return true; /* fd kept open: the lock lasts until exit */
}

static bool block_held(unsigned base)
{
    unsigned i;

    for (i = 0; i < n_held; i++) {
        if (held[i] == base) {
            return true;
        }
    }
    return false;
}

unsigned port_block(unsigned first, unsigned blocks, unsigned size)
{
    unsigned start = (unsigned)getpid() % blocks;
    unsigned k;

    for (k = 0; k < n_held; k++) {
        if (held[k] >= first && held[k] < first + blocks * size &&
            (held[k] - first) % size == 0 && block_free(held[k], size)) {
            return held[k];
        }
    }
    for (k = 0; k < blocks && n_held < HELD_MAX; k++) {
        unsigned base = first + ((start + k) % blocks) * size;

        if (block_held(base) || !block_claim(base, size)) {
            continue;
        }
        /* Claimed even when busy (another user of the machine listens
         * there): it is no use to anyone else either. */
        held[n_held++] = base;
        if (block_free(base, size)) {
            return base;
        }
    }
    return 0;
}
