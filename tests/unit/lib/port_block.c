/* port_block: see port_block.h. */
#include "tests/unit/lib/port_block.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A listener on 0.0.0.0 or 127.0.0.1 at @port makes binding either fail. */
static bool port_free(unsigned port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    if (fd < 0) {
        return false;
    }
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

unsigned port_block(unsigned first, unsigned blocks, unsigned size)
{
    unsigned start = (unsigned)getpid() % blocks;
    unsigned k;
    unsigned i;

    for (k = 0; k < blocks; k++) {
        unsigned base = first + ((start + k) % blocks) * size;

        for (i = 0; i < size && port_free(base + i); i++) {
        }
        if (i == size) {
            return base;
        }
    }
    return 0;
}
