/*
 * rident: a replica's identity, kept so that a replica whose data is lost
 * does not come back as a fresh member (docs/raft.md, "A replica that lost
 * its data"). A fresh member has term 0 and no vote: it could vote twice in
 * one term, and its empty log would count toward commits it never stored.
 *
 * The identity (group name, member id, an incarnation: random, drawn when
 * this replica's data was created) is written twice:
 *   - the marker "<marker_dir>/<group>.member", outside the group's data
 *     directory (raft/group.c passes the node's data directory): it
 *     survives the loss of the group's directory;
 *   - RIDENT_FILE inside the group's data directory: which replica the data
 *     there belongs to.
 * Each is written atomically (temporary file, fsync, rename, fsync of the
 * directory), RIDENT_FILE first, so that a marker never exists without
 * the group's identity having been written once.
 *
 * rident_check() decides from both files and the configuration what the
 * group may do; rident_record() writes them. Errors: 0 / -1 with a
 * message in @errmsg naming the files and, for a lost replica, the
 * operator's way out. Blocking file I/O, at start only.
 */
#ifndef RINGMQ_RAFT_IDENT_H
#define RINGMQ_RAFT_IDENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RIDENT_FILE "IDENTITY"
#define RIDENT_MARKER_SUFFIX ".member"
/* a shard's name (up to 63 bytes) with ".mq" fits */
#define RIDENT_GROUP_MAX 96

struct rident {
    char group[RIDENT_GROUP_MAX];
    uint64_t id;
    uint64_t incarnation; /* > 0 */
};

enum rident_verdict {
    /* Nothing recorded, an empty directory: start as configured (bootstrap
     * or join), then rident_record @found (a new incarnation). */
    RIDENT_NEW,
    /* The marker and the directory's identity agree with the
     * configuration: restart from the data. */
    RIDENT_KNOWN,
    /* Data that has no marker (written before markers existed, or the
     * marker was deleted): restart from it, then rident_record @found. */
    RIDENT_ADOPT,
    /* The marker says this node was a member, its data is gone, and the
     * operator said it was removed from the group (@rejoin): start empty
     * as a joining replica (no bootstrap), then rident_record @found (a
     * new incarnation). */
    RIDENT_REJOIN,
};

/* What group @group's replica @id may do with its data directory @dir
 * (existing, see rgroup_new) given the marker in @marker_dir. Returns the
 * verdict (>= 0) and fills @found with the identity to record, or -1 with
 * @errmsg when the replica must not start: its data is gone while the
 * marker says it belonged (and no @rejoin), or the marker or @dir belong to
 * another group, member id or incarnation, or a file is unreadable. */
int rident_check(const char *marker_dir,
                 const char *dir,
                 const char *group,
                 uint64_t id,
                 bool rejoin,
                 struct rident *found,
                 char *errmsg,
                 size_t errlen);

/* Write @ident into @dir (RIDENT_FILE), then the marker into @marker_dir,
 * each durably. 0 or -1 with @errmsg. */
int rident_record(const char *marker_dir,
                  const char *dir,
                  const struct rident *ident,
                  char *errmsg,
                  size_t errlen);

#endif
