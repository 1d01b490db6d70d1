/*
 * mcreply: a resumable parser for memcached text-protocol *replies* (the
 * client side; proto/mc_parse parses requests), as seen by a load
 * generator that sends single-key get and set.
 *
 * Bytes are fed as they arrive, split anywhere: mid-line, mid-value, mid
 * "\r\n". Value bytes are skipped in place, never copied, so large values
 * cost nothing but the scan; only reply lines (at most MCREPLY_LINE_MAX
 * bytes) are copied, and only when a read splits them.
 */
#ifndef RINGMQ_BENCH_MCREPLY_H
#define RINGMQ_BENCH_MCREPLY_H

#include <stddef.h>
#include <stdint.h>

/* Longest accepted reply line without its "\r\n": "VALUE <250-byte key>
 * <flags> <bytes> <cas>" fits with room to spare; error lines are cut. */
#define MCREPLY_LINE_MAX 1024
#define MCREPLY_KEY_MAX 250

enum mcreply_kind {
    MCREPLY_GET, /* "END" closed a get: n_values says hit/miss */
    MCREPLY_STORED,
    MCREPLY_NOT_STORED,
    MCREPLY_EXISTS,
    MCREPLY_NOT_FOUND,
    MCREPLY_DELETED,
    MCREPLY_TOUCHED,
    MCREPLY_ERROR,        /* "ERROR" */
    MCREPLY_CLIENT_ERROR, /* "CLIENT_ERROR <msg>" */
    MCREPLY_SERVER_ERROR, /* "SERVER_ERROR <msg>" */
};

/* One complete reply, valid only during the callback. */
struct mcreply {
    enum mcreply_kind kind;
    unsigned n_values;    /* MCREPLY_GET: VALUE blocks before END */
    uint64_t value_bytes; /* MCREPLY_GET: sum of their <bytes> */
    const char *key;      /* MCREPLY_GET with n_values > 0: first key */
    size_t key_len;
    const char *msg; /* *_ERROR: the text after the keyword */
    size_t msg_len;
};

/* Called once per complete reply, in stream order. */
typedef void (*mcreply_reply_cb)(void *arg, const struct mcreply *r);

struct mcreply_parser {
    int state;          /* file-private enum */
    uint64_t data_left; /* value bytes still to skip */
    unsigned crlf_seen; /* bytes of the value's trailing "\r\n" seen */
    unsigned n_values;
    uint64_t value_bytes;
    size_t key_len;
    char key[MCREPLY_KEY_MAX + 1];
    size_t line_len; /* bytes of a split line held in @line */
    char line[MCREPLY_LINE_MAX + 2];
};

/* Reset @p to expect the start of a reply. */
void mcreply_init(struct mcreply_parser *p);

/* Consume @len bytes at @data (borrowed for the call only), calling @cb
 * with @arg for each reply they complete. Returns 0, or -1 on a protocol
 * violation (unknown reply line, line too long, bad VALUE header, value not
 * followed by "\r\n"); after -1 the stream cannot be resynchronised and @p
 * must be re-initialised along with the connection. */
int mcreply_feed(struct mcreply_parser *p,
                 const char *data,
                 size_t len,
                 mcreply_reply_cb cb,
                 void *arg);

#endif
