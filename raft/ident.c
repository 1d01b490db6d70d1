/* rident: see ident.h. */
#include "raft/ident.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/random_id.h"

#define IDENT_HEADER "ringmq replica identity 1"
#define IDENT_TEXT_MAX 512
#define TMP_SUFFIX ".tmp"

static void ident_text(const struct rident *ident, char *out, size_t len)
{
    snprintf(out, len,
             IDENT_HEADER "\ngroup %s\nid %" PRIu64 "\nincarnation %016" PRIx64
                          "\n",
             ident->group, ident->id, ident->incarnation);
}

static int ident_parse(const char *text, struct rident *out)
{
    char header[64];
    int used = 0;

    _Static_assert(RIDENT_GROUP_MAX == 96, "the %95s below");
    memset(out, 0, sizeof(*out));
    /* group names have no spaces */
    if (sscanf(text, "%63[^\n]\ngroup %95s\nid %" SCNu64
                     "\nincarnation %" SCNx64 "\n%n",
               header, out->group, &out->id, &out->incarnation,
               &used) != 4 ||
        used == 0 || text[used] != '\0' ||
        strcmp(header, IDENT_HEADER) != 0 || out->id == 0 ||
        out->incarnation == 0) {
        return -1;
    }
    return 0;
}

/* 0 and @out filled, 1 if @path does not exist, -1 with @errmsg. */
static int ident_read(const char *path, struct rident *out, char *errmsg,
                      size_t errlen)
{
    char text[IDENT_TEXT_MAX + 1];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 && errno == ENOENT) {
        return 1;
    }
    if (fd < 0) {
        snprintf(errmsg, errlen, "replica identity '%s': %s", path,
                 strerror(errno));
        return -1;
    }
    n = read(fd, text, IDENT_TEXT_MAX);
    close(fd);
    if (n < 0) {
        snprintf(errmsg, errlen, "replica identity '%s': %s", path,
                 strerror(errno));
        return -1;
    }
    text[n] = '\0';
    if (n == IDENT_TEXT_MAX || ident_parse(text, out) != 0) {
        snprintf(errmsg, errlen,
                 "replica identity '%s' is not one ringmq wrote (damaged?): "
                 "move it away only if you know which replica this is",
                 path);
        return -1;
    }
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv;

    if (fd < 0) {
        return -1;
    }
    rv = fsync(fd);
    close(fd);
    return rv;
}

/* @dir/@name holds @text durably, or the old file (or none) is left. */
static int write_atomic(const char *dir, const char *name, const char *text,
                        char *errmsg, size_t errlen)
{
    char path[PATH_MAX];
    char tmp[PATH_MAX];
    size_t len = strlen(text);
    ssize_t n;
    int fd;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
            sizeof(path) ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s%s", path, TMP_SUFFIX) >=
            sizeof(tmp)) {
        snprintf(errmsg, errlen, "replica identity in '%s': path too long",
                 dir);
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        goto err;
    }
    n = write(fd, text, len);
    if (n != (ssize_t)len || fsync(fd) != 0) {
        if (n >= 0 && n != (ssize_t)len) {
            errno = ENOSPC;
        }
        close(fd);
        goto err;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0 || fsync_dir(dir) != 0) {
        goto err;
    }
    return 0;

err:
    snprintf(errmsg, errlen, "replica identity '%s': %s", path,
             strerror(errno));
    unlink(tmp);
    return -1;
}

/* No entry in @dir but the leftover of an interrupted identity write. */
static int dir_empty(const char *dir, bool *empty, char *errmsg,
                     size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (d == NULL) {
        snprintf(errmsg, errlen, "data directory '%s': %s", dir,
                 strerror(errno));
        return -1;
    }
    *empty = true;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
            strcmp(de->d_name, RIDENT_FILE TMP_SUFFIX) != 0) {
            *empty = false;
            break;
        }
    }
    closedir(d);
    return 0;
}

static int marker_name(const char *group, char *out, size_t len)
{
    return (size_t)snprintf(out, len, "%s" RIDENT_MARKER_SUFFIX, group) >= len
               ? -1
               : 0;
}

static bool same_replica(const struct rident *a, const char *group,
                         uint64_t id)
{
    return strcmp(a->group, group) == 0 && a->id == id;
}

int rident_check(const char *marker_dir,
                 const char *dir,
                 const char *group,
                 uint64_t id,
                 bool rejoin,
                 struct rident *found,
                 char *errmsg,
                 size_t errlen)
{
    char name[RIDENT_GROUP_MAX + sizeof(RIDENT_MARKER_SUFFIX)];
    char marker_path[PATH_MAX];
    char ident_path[PATH_MAX];
    struct rident marker;
    struct rident here;
    bool empty;
    int has_marker;
    int has_ident;

    memset(found, 0, sizeof(*found));
    if (strlen(group) >= RIDENT_GROUP_MAX || strchr(group, '/') != NULL ||
        group[0] == '\0' || id == 0 ||
        marker_name(group, name, sizeof(name)) != 0 ||
        (size_t)snprintf(marker_path, sizeof(marker_path), "%s/%s",
                         marker_dir, name) >= sizeof(marker_path) ||
        (size_t)snprintf(ident_path, sizeof(ident_path), "%s/%s", dir,
                         RIDENT_FILE) >= sizeof(ident_path)) {
        snprintf(errmsg, errlen,
                 "replica identity: bad group name '%s', id or path", group);
        return -1;
    }
    snprintf(found->group, sizeof(found->group), "%s", group);
    found->id = id;

    has_marker = ident_read(marker_path, &marker, errmsg, errlen);
    if (has_marker < 0) {
        return -1;
    }
    has_ident = ident_read(ident_path, &here, errmsg, errlen);
    if (has_ident < 0) {
        return -1;
    }
    if (has_marker == 0 && !same_replica(&marker, group, id)) {
        snprintf(errmsg, errlen,
                 "group %s: the marker '%s' says this node is member %" PRIu64
                 " of group %s, not member %" PRIu64
                 ": was the node's id or data directory changed?",
                 group, marker_path, marker.id, marker.group, id);
        return -1;
    }
    if (has_ident == 0 && !same_replica(&here, group, id)) {
        snprintf(errmsg, errlen,
                 "group %s: data directory '%s' holds member %" PRIu64
                 " of group %s, not member %" PRIu64 " of group %s",
                 group, dir, here.id, here.group, id, group);
        return -1;
    }
    if (has_ident == 0) {
        found->incarnation = here.incarnation;
        if (has_marker != 0) {
            return RIDENT_ADOPT; /* the marker was deleted: data is here */
        }
        if (marker.incarnation != here.incarnation) {
            snprintf(errmsg, errlen,
                     "group %s: data directory '%s' holds incarnation %016" PRIx64
                     " of member %" PRIu64 ", but this node's is %016" PRIx64
                     " (marker '%s'): older data put back? It may have lost "
                     "votes and entries; see docs/raft.md",
                     group, dir, here.incarnation, id, marker.incarnation,
                     marker_path);
            return -1;
        }
        return RIDENT_KNOWN;
    }
    if (dir_empty(dir, &empty, errmsg, errlen) != 0) {
        return -1;
    }
    if (has_marker != 0) {
        found->incarnation = random_id_nonzero();
        return empty ? RIDENT_NEW : RIDENT_ADOPT;
    }
    if (!empty) {
        snprintf(errmsg, errlen,
                 "group %s: data directory '%s' holds data without this "
                 "replica's identity (%s), though this node was member %" PRIu64
                 " (marker '%s'): not this replica's data; see docs/raft.md",
                 group, dir, RIDENT_FILE, id, marker_path);
        return -1;
    }
    if (!rejoin) {
        snprintf(errmsg, errlen,
                 "group %s: this node was member %" PRIu64
                 " (marker '%s') but data directory '%s' is empty: the "
                 "replica lost its log and votes and must not start as that "
                 "member again. Remove member %" PRIu64
                 " (ringmqctl member remove), then start this node with "
                 "--rejoin and add it back (ringmqctl member add); "
                 "docs/raft.md",
                 group, id, marker_path, dir, id);
        return -1;
    }
    found->incarnation = random_id_nonzero();
    return RIDENT_REJOIN;
}

int rident_record(const char *marker_dir,
                  const char *dir,
                  const struct rident *ident,
                  char *errmsg,
                  size_t errlen)
{
    char text[IDENT_TEXT_MAX];
    char name[RIDENT_GROUP_MAX + sizeof(RIDENT_MARKER_SUFFIX)];

    if (ident->id == 0 || ident->incarnation == 0 ||
        marker_name(ident->group, name, sizeof(name)) != 0) {
        snprintf(errmsg, errlen, "replica identity: bad identity");
        return -1;
    }
    ident_text(ident, text, sizeof(text));
    if (write_atomic(dir, RIDENT_FILE, text, errmsg, errlen) != 0 ||
        write_atomic(marker_dir, name, text, errmsg, errlen) != 0) {
        return -1;
    }
    return 0;
}
