/*
 * mc_parse: a resumable parser of the memcached text protocol.
 *
 * The caller keeps the bytes it has received but not yet consumed in one
 * contiguous buffer and calls mc_parse_next() with that buffer every time
 * more bytes arrive. Each call yields at most one request. Requests point
 * into the caller's buffer (keys, data block): nothing is copied, so they
 * stay valid only until the caller drops or moves those bytes.
 *
 * The parser decides everything memcached 1.6 decides at the protocol level:
 * command names and argument counts (ERROR), numbers, key lengths and the
 * data-block terminator (CLIENT_ERROR ...), too-large values (SERVER_ERROR
 * object too large for cache, with the data swallowed as it arrives, never
 * buffered), over-long lines and the binary protocol (close). The replies
 * of executed commands are the server's business.
 *
 * Behaviour deliberately different from memcached 1.6.18 (see mc_parse.c):
 *   - keys with control characters are rejected (memcached stores them);
 *   - numbers that do not fit their field are rejected (memcached truncates
 *     a length of 2^32 to 0 and flags of 2^32 to 0);
 *   - get lines are bounded (MC_PARSE_GET_LINE_MAX; memcached grows without
 *     bound) and rejected with "CLIENT_ERROR line too long" + close.
 */
#ifndef RINGMQ_MC_PARSE_H
#define RINGMQ_MC_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* memcached closes a connection whose line reaches this length without a
 * newline, unless the line is a get. */
#define MC_PARSE_LINE_MAX 2048
/* Our bound for get/gets/gat/gats lines (memcached has none). */
#define MC_PARSE_GET_LINE_MAX (256 * 1024)

enum mc_cmd {
    MC_CMD_NONE = 0, /* unknown command or wrong argument count */
    MC_CMD_GET,
    MC_CMD_GETS,
    MC_CMD_GAT,
    MC_CMD_GATS,
    MC_CMD_SET,
    MC_CMD_ADD,
    MC_CMD_REPLACE,
    MC_CMD_APPEND,
    MC_CMD_PREPEND,
    MC_CMD_CAS,
    MC_CMD_INCR,
    MC_CMD_DECR,
    MC_CMD_DELETE,
    MC_CMD_TOUCH,
    MC_CMD_FLUSH_ALL,
    MC_CMD_VERSION,
    MC_CMD_VERBOSITY,
    MC_CMD_QUIT,
    MC_CMD_STATS,       /* "stats": general statistics */
    MC_CMD_STATS_RESET, /* "stats reset" */
    MC_CMD__COUNT
};

enum mc_parse_status {
    MC_PARSE_OK = 0, /* one request parsed */
    MC_PARSE_AGAIN,  /* need more bytes */
    MC_PARSE_CLOSE   /* close the connection (after req->error, if set) */
};

struct mc_key {
    const char *data; /* borrowed from the input buffer */
    size_t len;
};

/* One parsed request. Pointers borrow the caller's input buffer (keys also
 * the parser's key array, until the next mc_parse_next call). */
struct mc_request {
    enum mc_cmd cmd;
    /* Reply this line (without CRLF) instead of executing; NULL if none. On
     * MC_PARSE_CLOSE: the last line to send, NULL for a silent close. */
    const char *error;
    /* The client asked for no reply. memcached then suppresses every reply
     * of the command, CLIENT_ERRORs included. */
    bool noreply;
    /* A store whose declared length exceeds item_size_max: error is set and
     * the data block is being swallowed. memcached also unlinks the old item
     * on a too-large "set"; the server does the same. */
    bool too_large;
    const struct mc_key *keys; /* get family: every key; others: keys[0] */
    size_t nkeys;
    const char *value; /* store commands: the data block, without CRLF */
    size_t value_len;
    uint32_t flags;
    int64_t exptime; /* store, touch, gat; flush_all: the delay */
    uint64_t cas;
    uint64_t delta;
};

/* Parser state. Caller-allocated; all fields private. */
struct mc_parser {
    uint32_t item_size_max;
    bool started;          /* the connection's first byte was seen */
    uint64_t swallow;      /* data bytes still to discard */
    size_t scanned;        /* bytes of the pending line known not to hold \n */
    size_t need;           /* bytes the pending request needs, 0 = unknown */
    struct mc_key *keys;   /* owned, reused between requests */
    size_t keys_cap;
};

/* @item_size_max 0 = CACHE_ITEM_SIZE_MAX_DEFAULT. */
void mc_parser_init(struct mc_parser *p, uint32_t item_size_max);
void mc_parser_free(struct mc_parser *p);

/*
 * Parse the next request from @data[0..@len). @data must start at the first
 * byte not yet consumed, and hold every byte not consumed by earlier calls
 * (plus new ones at the end). On return *@consumed bytes (possibly some even
 * with MC_PARSE_AGAIN: swallowed data) are done with and must be dropped by
 * the caller before the next call; @req is filled only on MC_PARSE_OK and
 * MC_PARSE_CLOSE.
 */
enum mc_parse_status mc_parse_next(struct mc_parser *p, const char *data,
                                   size_t len, struct mc_request *req,
                                   size_t *consumed);

/* Bytes the pending request needs in total (line + data block), if known,
 * so the caller can size its buffer; 0 when unknown. */
size_t mc_parse_need(const struct mc_parser *p);

const char *mc_cmd_name(enum mc_cmd cmd);

#endif
