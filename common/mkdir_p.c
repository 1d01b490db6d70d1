/* mkdir_p: see mkdir_p.h. */
#include "common/mkdir_p.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int mkdir_p(const char *path, char *err, size_t errlen)
{
    char part[PATH_MAX];
    size_t len = strlen(path);
    size_t i;

    if (len == 0 || len >= sizeof(part)) {
        snprintf(err, errlen, "cannot create '%s': %s", path,
                 strerror(len == 0 ? ENOENT : ENAMETOOLONG));
        return -1;
    }
    memcpy(part, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') {
            continue;
        }
        if (path[i - 1] == '/') {
            continue; /* "//" or a trailing '/' */
        }
        part[i] = '\0';
        if (mkdir(part, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create '%s': %s", part,
                     strerror(errno));
            return -1;
        }
        part[i] = path[i];
    }
    return 0;
}
