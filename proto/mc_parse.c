/*
 * mc_parse: see mc_parse.h.
 *
 * The rules below were checked byte for byte against memcached 1.6.18
 * (proto_text.c). Summary of what it does, and we copy:
 *
 *   - A line ends at "\n"; a "\r" right before it is dropped. Tokens are
 *     separated by runs of spaces (only ' ': a tab is part of a token).
 *   - Wrong argument counts and unknown commands get "ERROR"; a line whose
 *     last token starts with "HTTP/" closes the connection silently.
 *   - "noreply" is recognised only as the last token, and once recognised it
 *     also suppresses the CLIENT_ERROR replies of that command.
 *   - A store command with a bad command line does not consume its data
 *     block: the data is parsed as the next command (usually "ERROR").
 *   - The data block is the declared bytes + 2; if the last two are not
 *     "\r\n" the reply is "CLIENT_ERROR bad data chunk" and parsing resumes
 *     right after those bytes.
 *   - A declared length above the item size limit gets "SERVER_ERROR object
 *     too large for cache" and bytes + 2 are swallowed unchecked.
 *   - More than 2048 bytes without a newline close the connection silently
 *     unless the line is a get.
 *   - A get line with any over-long key answers only CLIENT_ERROR, even if
 *     earlier keys would have hit.
 */
#include "proto/mc_parse.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "sm/cache_op.h"

/* memcached never needs more for a non-get command: set/cas have 7. */
#define MAX_TOKENS 8

#define ERR_FORMAT "CLIENT_ERROR bad command line format"
#define ERR_DELETE_USAGE                                                      \
    "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
#define ERR_DELTA "CLIENT_ERROR invalid numeric delta argument"
#define ERR_EXPTIME "CLIENT_ERROR invalid exptime argument"
#define ERR_CHUNK "CLIENT_ERROR bad data chunk"
#define ERR_TOO_LARGE "SERVER_ERROR object too large for cache"
#define ERR_LINE_TOO_LONG "CLIENT_ERROR line too long"
#define ERR_BINARY "SERVER_ERROR binary protocol is not supported"

struct token {
    const char *s;
    size_t len;
};

void mc_parser_init(struct mc_parser *p, uint32_t item_size_max)
{
    memset(p, 0, sizeof(*p));
    p->item_size_max =
        item_size_max ? item_size_max : CACHE_ITEM_SIZE_MAX_DEFAULT;
}

void mc_parser_free(struct mc_parser *p)
{
    free(p->keys);
    p->keys = NULL;
    p->keys_cap = 0;
}

size_t mc_parse_need(const struct mc_parser *p)
{
    return p->need;
}

const char *mc_cmd_name(enum mc_cmd cmd)
{
    static const char *names[MC_CMD__COUNT] = {
        "?",       "get",       "gets",    "gat",       "gats",
        "set",     "add",       "replace", "append",    "prepend",
        "cas",     "incr",      "decr",    "delete",    "touch",
        "flush_all", "version", "verbosity", "quit",    "stats",
        "stats reset",
    };
    return (unsigned)cmd < MC_CMD__COUNT ? names[cmd] : "?";
}

static bool tok_is(const struct token *t, const char *s)
{
    size_t n = strlen(s);
    return t->len == n && memcmp(t->s, s, n) == 0;
}

/* strtoull-like as memcached's safe_strtoull uses it on a whole token: an
 * optional '+', then decimal digits only. A '-' is refused (memcached lets
 * "-0" through; nobody sends that). */
static bool parse_u64(const struct token *t, uint64_t *out)
{
    const char *s = t->s;
    const char *end = t->s + t->len;
    uint64_t v = 0;

    if (s < end && *s == '+') {
        s++;
    }
    if (s == end) {
        return false;
    }
    for (; s < end; s++) {
        unsigned d = (unsigned)(unsigned char)*s - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* A signed 32-bit decimal. memcached parses into a long and silently
 * truncates to int32; we refuse what does not fit instead. */
static bool parse_i32(const struct token *t, int64_t *out)
{
    struct token u = *t;
    bool neg = false;
    uint64_t v;

    if (u.len > 0 && (u.s[0] == '-' || u.s[0] == '+')) {
        neg = u.s[0] == '-';
        u.s++;
        u.len--;
        if (u.len > 0 && u.s[0] == '+') {
            return false; /* "-+1" */
        }
    }
    if (!parse_u64(&u, &v)) {
        return false;
    }
    if (neg ? v > (uint64_t)INT32_MAX + 1 : v > INT32_MAX) {
        return false;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static bool key_ok(const struct token *t)
{
    return cache_key_valid(t->s, t->len);
}

static void keys_reserve(struct mc_parser *p, size_t n)
{
    size_t cap = p->keys_cap ? p->keys_cap : 8;

    if (n <= p->keys_cap) {
        return;
    }
    while (cap < n) {
        cap *= 2;
    }
    p->keys = xrealloc(p->keys, cap * sizeof(*p->keys));
    p->keys_cap = cap;
}

/* Split @line into tokens; store at most @max, return how many there are. */
static size_t tokenize(const char *line, size_t len, struct token *toks,
                       size_t max)
{
    size_t n = 0;
    size_t i = 0;

    while (i < len) {
        size_t start;
        while (i < len && line[i] == ' ') {
            i++;
        }
        if (i == len) {
            break;
        }
        start = i;
        while (i < len && line[i] != ' ') {
            i++;
        }
        if (n < max) {
            toks[n].s = line + start;
            toks[n].len = i - start;
        }
        n++;
    }
    return n;
}

/* Does the pending (newline-less) line look like a get? memcached lets only
 * those grow past 2048 bytes; it skips up to 100 leading spaces. */
static bool is_get_line(const char *data, size_t len)
{
    size_t i = 0;

    while (i < len && data[i] == ' ') {
        i++;
    }
    if (i > 100) {
        return false;
    }
    data += i;
    len -= i;
    return (len >= 4 && (memcmp(data, "get ", 4) == 0 ||
                         memcmp(data, "gat ", 4) == 0)) ||
           (len >= 5 && (memcmp(data, "gets ", 5) == 0 ||
                         memcmp(data, "gats ", 5) == 0));
}

static void set_one_key(struct mc_parser *p, struct mc_request *req,
                        const struct token *t)
{
    keys_reserve(p, 1);
    p->keys[0].data = t->s;
    p->keys[0].len = t->len;
    req->keys = p->keys;
    req->nkeys = 1;
}

/* get/gets/gat/gats: every token after the command (and exptime) a key. */
static void parse_get(struct mc_parser *p, const char *line, size_t len,
                      struct mc_request *req, bool touch)
{
    struct token t;
    size_t i = 0;
    size_t n = 0;
    bool first = true;

    req->keys = p->keys;
    for (;;) {
        size_t start;
        while (i < len && line[i] == ' ') {
            i++;
        }
        if (i == len) {
            break;
        }
        start = i;
        while (i < len && line[i] != ' ') {
            i++;
        }
        t.s = line + start;
        t.len = i - start;
        if (first) {
            first = false; /* the command itself */
            continue;
        }
        if (touch && req->exptime == INT64_MIN) {
            if (!parse_i32(&t, &req->exptime)) {
                req->error = ERR_EXPTIME;
                return;
            }
            continue;
        }
        if (!key_ok(&t)) {
            req->error = ERR_FORMAT;
            return;
        }
        keys_reserve(p, n + 1);
        p->keys[n].data = t.s;
        p->keys[n].len = t.len;
        n++;
    }
    req->keys = p->keys;
    req->nkeys = n;
}

/*
 * Parse one complete command line (without its line end). Store commands
 * leave req->value_len as the declared length; the caller takes the data.
 * Returns false when the connection must be closed silently.
 */
static bool parse_line(struct mc_parser *p, const char *line, size_t len,
                       struct mc_request *req)
{
    struct token tok[MAX_TOKENS];
    size_t n = tokenize(line, len, tok, MAX_TOKENS);
    const struct token *cmd = &tok[0];
    const struct token *last;
    bool last_noreply;
    int64_t bytes = 0;
    uint64_t u;

    req->error = "ERROR";
    if (n == 0) {
        return true;
    }
    last = &tok[(n < MAX_TOKENS ? n : MAX_TOKENS) - 1];
    last_noreply = n > 1 && n <= MAX_TOKENS && tok_is(last, "noreply");

    if (tok_is(cmd, "get") || tok_is(cmd, "gets") || tok_is(cmd, "gat") ||
        tok_is(cmd, "gats")) {
        bool touch = cmd->s[1] == 'a';
        if (n < 2) {
            return true;
        }
        req->cmd = touch ? (cmd->len == 4 ? MC_CMD_GATS : MC_CMD_GAT)
                         : (cmd->len == 4 ? MC_CMD_GETS : MC_CMD_GET);
        req->error = NULL;
        req->exptime = touch ? INT64_MIN : 0;
        parse_get(p, line, len, req, touch);
        return true;
    }

    if (tok_is(cmd, "set") || tok_is(cmd, "add") || tok_is(cmd, "replace") ||
        tok_is(cmd, "append") || tok_is(cmd, "prepend") ||
        tok_is(cmd, "cas")) {
        bool cas = tok_is(cmd, "cas");
        size_t base = cas ? 6 : 5;
        if (n != base && n != base + 1) {
            return true;
        }
        req->cmd = cas                       ? MC_CMD_CAS
                   : tok_is(cmd, "set")      ? MC_CMD_SET
                   : tok_is(cmd, "add")      ? MC_CMD_ADD
                   : tok_is(cmd, "replace")  ? MC_CMD_REPLACE
                   : tok_is(cmd, "append")   ? MC_CMD_APPEND
                                             : MC_CMD_PREPEND;
        /* Any other extra token is ignored, like memcached does. */
        req->noreply = n == base + 1 && last_noreply;
        req->error = ERR_FORMAT;
        if (!key_ok(&tok[1]) || !parse_u64(&tok[2], &u) || u > UINT32_MAX ||
            !parse_i32(&tok[3], &req->exptime) || !parse_i32(&tok[4], &bytes)) {
            return true;
        }
        req->flags = (uint32_t)u;
        if (cas && !parse_u64(&tok[5], &req->cas)) {
            return true;
        }
        if (bytes < 0 || bytes > INT32_MAX - 2) {
            return true;
        }
        set_one_key(p, req, &tok[1]);
        req->value_len = (size_t)bytes;
        req->error = NULL;
        return true;
    }

    if (tok_is(cmd, "incr") || tok_is(cmd, "decr")) {
        if (n != 3 && n != 4) {
            return true;
        }
        req->cmd = cmd->s[0] == 'i' ? MC_CMD_INCR : MC_CMD_DECR;
        req->noreply = n == 4 && last_noreply;
        if (!key_ok(&tok[1])) {
            req->error = ERR_FORMAT;
            return true;
        }
        if (!parse_u64(&tok[2], &req->delta)) {
            req->error = ERR_DELTA;
            return true;
        }
        set_one_key(p, req, &tok[1]);
        req->error = NULL;
        return true;
    }

    if (tok_is(cmd, "delete")) {
        if (n < 2 || n > 4) {
            return true;
        }
        req->cmd = MC_CMD_DELETE;
        if (n > 2) {
            /* memcached still accepts the pre-1.4 "delete <key> 0". */
            bool hold_is_zero = tok_is(&tok[2], "0");
            req->noreply = last_noreply;
            if (!((n == 3 && (hold_is_zero || req->noreply)) ||
                  (n == 4 && hold_is_zero && req->noreply))) {
                req->error = ERR_DELETE_USAGE;
                return true;
            }
        }
        if (!key_ok(&tok[1])) {
            req->error = ERR_FORMAT;
            return true;
        }
        set_one_key(p, req, &tok[1]);
        req->error = NULL;
        return true;
    }

    if (tok_is(cmd, "touch")) {
        if (n != 3 && n != 4) {
            return true;
        }
        req->cmd = MC_CMD_TOUCH;
        req->noreply = n == 4 && last_noreply;
        if (!key_ok(&tok[1])) {
            req->error = ERR_FORMAT;
            return true;
        }
        if (!parse_i32(&tok[2], &req->exptime)) {
            req->error = ERR_EXPTIME;
            return true;
        }
        set_one_key(p, req, &tok[1]);
        req->error = NULL;
        return true;
    }

    if (tok_is(cmd, "flush_all")) {
        if (n > 3) {
            return true;
        }
        req->cmd = MC_CMD_FLUSH_ALL;
        req->noreply = last_noreply;
        req->error = NULL;
        /* "flush_all 0 x" is OK in memcached: only tok[1] is looked at. */
        if (n > (req->noreply ? 2u : 1u) &&
            !parse_i32(&tok[1], &req->exptime)) {
            req->error = ERR_EXPTIME;
        }
        return true;
    }

    if (tok_is(cmd, "version")) {
        req->cmd = MC_CMD_VERSION;
        req->error = NULL;
        return true;
    }
    if (tok_is(cmd, "quit")) {
        req->cmd = MC_CMD_QUIT;
        req->error = NULL;
        return true;
    }

    if (tok_is(cmd, "verbosity")) {
        if (n != 2 && n != 3) {
            return true;
        }
        req->cmd = MC_CMD_VERBOSITY;
        req->noreply = last_noreply;
        /* The level is validated, then ignored: there is no log level to
         * change per edge. */
        req->error = parse_u64(&tok[1], &u) && u <= UINT32_MAX ? NULL
                                                               : ERR_FORMAT;
        return true;
    }

    if (tok_is(cmd, "stats")) {
        /* Only the general group and "reset" exist at this edge; memcached
         * answers ERROR for unknown groups, so "stats slabs", "stats items",
         * "stats settings" ... get ERROR here too. */
        if (n == 1) {
            req->cmd = MC_CMD_STATS;
            req->error = NULL;
        } else if (tok_is(&tok[1], "reset")) {
            req->cmd = MC_CMD_STATS_RESET;
            req->error = NULL;
        }
        return true;
    }

    /* memcached drops HTTP clients without a word. */
    if (n <= MAX_TOKENS && last->len >= 5 && memcmp(last->s, "HTTP/", 5) == 0) {
        return false;
    }
    return true;
}

static bool is_store(enum mc_cmd cmd)
{
    return cmd >= MC_CMD_SET && cmd <= MC_CMD_CAS;
}

enum mc_parse_status mc_parse_next(struct mc_parser *p, const char *data,
                                   size_t len, struct mc_request *req,
                                   size_t *consumed)
{
    size_t off = 0;
    const char *nl;
    size_t eol;
    size_t line_len;

    *consumed = 0;
    memset(req, 0, sizeof(*req));
    /* A huge get line grew the key array; it is only needed until this
     * call, so do not keep it for the life of the connection. */
    if (p->keys_cap > 1024) {
        mc_parser_free(p);
    }

    /* Discard the data of a too-large store as it arrives. */
    if (p->swallow > 0) {
        off = p->swallow < len ? (size_t)p->swallow : len;
        p->swallow -= off;
        *consumed = off;
        if (p->swallow > 0) {
            return MC_PARSE_AGAIN;
        }
        data += off;
        len -= off;
    }
    if (len == 0) {
        return MC_PARSE_AGAIN;
    }
    if (!p->started) {
        p->started = true;
        /* memcached would switch to its binary protocol here. We do not
         * speak it; say so instead of answering 24-byte headers with
         * ERROR lines. */
        if ((unsigned char)data[0] == 0x80) {
            req->error = ERR_BINARY;
            return MC_PARSE_CLOSE;
        }
    }
    if (p->need > 0 && len < p->need) {
        return MC_PARSE_AGAIN;
    }

    nl = p->scanned < len ? memchr(data + p->scanned, '\n', len - p->scanned)
                          : NULL;
    if (nl == NULL) {
        p->scanned = len;
        if (len > MC_PARSE_LINE_MAX) {
            if (!is_get_line(data, len)) {
                return MC_PARSE_CLOSE;
            }
            if (len > MC_PARSE_GET_LINE_MAX) {
                req->error = ERR_LINE_TOO_LONG;
                return MC_PARSE_CLOSE;
            }
        }
        return MC_PARSE_AGAIN;
    }
    eol = (size_t)(nl - data) + 1;
    /* The same limits for a line that arrived whole, so the outcome does not
     * depend on how the bytes were split into reads. */
    if (eol > MC_PARSE_LINE_MAX) {
        if (!is_get_line(data, eol)) {
            return MC_PARSE_CLOSE;
        }
        if (eol > MC_PARSE_GET_LINE_MAX) {
            req->error = ERR_LINE_TOO_LONG;
            return MC_PARSE_CLOSE;
        }
    }
    line_len = eol - 1;
    if (line_len > 0 && data[line_len - 1] == '\r') {
        line_len--;
    }

    if (!parse_line(p, data, line_len, req)) {
        req->error = NULL;
        return MC_PARSE_CLOSE;
    }

    if (is_store(req->cmd) && req->error == NULL) {
        size_t total = eol + req->value_len + 2;
        if (req->value_len > p->item_size_max) {
            /* memcached swallows bytes + 2 without looking at them. */
            req->too_large = true;
            req->error = ERR_TOO_LARGE;
            p->swallow = (uint64_t)req->value_len + 2;
            req->value_len = 0;
            total = eol;
        } else if (len < total) {
            p->need = total;
            return MC_PARSE_AGAIN;
        } else if (data[total - 2] != '\r' || data[total - 1] != '\n') {
            req->error = ERR_CHUNK;
            req->value_len = 0;
        } else {
            req->value = data + eol;
        }
        eol = total;
    } else if (is_store(req->cmd)) {
        req->value_len = 0;
    }

    p->scanned = 0;
    p->need = 0;
    *consumed = off + eol;
    return MC_PARSE_OK;
}
