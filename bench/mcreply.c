/*
 * mcreply: resumable memcached text reply parser (contract in mcreply.h).
 *
 *   LINE --"VALUE k f n"--> DATA (skip n bytes) --> CRLF ("\r\n") --> LINE
 *   LINE --"END"----------> emit MCREPLY_GET, stay in LINE
 *   LINE --other keyword--> emit it, stay in LINE
 *
 * Lines are parsed in place when a read holds them whole (the common case)
 * and copied into p->line only when a read boundary splits one.
 */
#include "bench/mcreply.h"

#include <string.h>

enum { ST_LINE, ST_DATA, ST_CRLF };

void mcreply_init(struct mcreply_parser *p)
{
    p->state = ST_LINE;
    p->data_left = 0;
    p->crlf_seen = 0;
    p->n_values = 0;
    p->value_bytes = 0;
    p->key_len = 0;
    p->line_len = 0;
}

static int is_word(const char *line, size_t len, const char *word)
{
    size_t wl = strlen(word);

    return len == wl && memcmp(line, word, wl) == 0;
}

/* @line starts with @word followed by end of line or a space. */
static int has_prefix(const char *line,
                      size_t len,
                      const char *word,
                      const char **rest,
                      size_t *rest_len)
{
    size_t wl = strlen(word);

    if (len < wl || memcmp(line, word, wl) != 0) {
        return 0;
    }
    if (len > wl && line[wl] != ' ') {
        return 0;
    }
    *rest = len > wl ? line + wl + 1 : line + len;
    *rest_len = len > wl ? len - wl - 1 : 0;
    return 1;
}

/* Next space-separated token of [*pos, end); 0 if none. */
static int next_token(const char **pos,
                      const char *end,
                      const char **tok,
                      size_t *tok_len)
{
    const char *s = *pos;
    const char *e;

    while (s < end && *s == ' ') {
        s++;
    }
    e = s;
    while (e < end && *e != ' ') {
        e++;
    }
    if (e == s) {
        return 0;
    }
    *tok = s;
    *tok_len = (size_t)(e - s);
    *pos = e;
    return 1;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || len > 20) {
        return -1;
    }
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10) {
            return -1;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static int parse_value_header(struct mcreply_parser *p,
                              const char *s,
                              size_t len)
{
    const char *pos = s;
    const char *end = s + len;
    const char *tok;
    size_t tok_len;
    uint64_t flags;
    uint64_t bytes;

    if (!next_token(&pos, end, &tok, &tok_len) || tok_len > MCREPLY_KEY_MAX) {
        return -1;
    }
    if (p->n_values == 0) {
        memcpy(p->key, tok, tok_len);
        p->key[tok_len] = '\0';
        p->key_len = tok_len;
    }
    if (!next_token(&pos, end, &tok, &tok_len) ||
        parse_u64(tok, tok_len, &flags) != 0 || flags > UINT32_MAX) {
        return -1;
    }
    if (!next_token(&pos, end, &tok, &tok_len) ||
        parse_u64(tok, tok_len, &bytes) != 0) {
        return -1;
    }
    /* An optional cas unique (gets) may follow; nothing else. */
    if (next_token(&pos, end, &tok, &tok_len) &&
        (parse_u64(tok, tok_len, &flags) != 0 ||
         next_token(&pos, end, &tok, &tok_len))) {
        return -1;
    }
    p->n_values++;
    p->value_bytes += bytes;
    p->data_left = bytes;
    p->crlf_seen = 0;
    p->state = bytes > 0 ? ST_DATA : ST_CRLF;
    return 0;
}

static void emit(struct mcreply_parser *p,
                 struct mcreply *r,
                 mcreply_reply_cb cb,
                 void *arg)
{
    cb(arg, r);
    p->n_values = 0;
    p->value_bytes = 0;
    p->key_len = 0;
}

static int handle_line(struct mcreply_parser *p,
                       const char *line,
                       size_t len,
                       mcreply_reply_cb cb,
                       void *arg)
{
    struct mcreply r;
    const char *rest;
    size_t rest_len;

    memset(&r, 0, sizeof(r));
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    if (has_prefix(line, len, "VALUE", &rest, &rest_len)) {
        return parse_value_header(p, rest, rest_len);
    }
    if (is_word(line, len, "END")) {
        r.kind = MCREPLY_GET;
        r.n_values = p->n_values;
        r.value_bytes = p->value_bytes;
        r.key = p->n_values ? p->key : NULL;
        r.key_len = p->key_len;
        emit(p, &r, cb, arg);
        return 0;
    }
    /* Errors may cut a get reply short (memcached: "SERVER_ERROR out of
     * memory writing get response"): they end the request either way. */
    if (has_prefix(line, len, "SERVER_ERROR", &rest, &rest_len)) {
        r.kind = MCREPLY_SERVER_ERROR;
    } else if (has_prefix(line, len, "CLIENT_ERROR", &rest, &rest_len)) {
        r.kind = MCREPLY_CLIENT_ERROR;
    } else if (is_word(line, len, "ERROR")) {
        r.kind = MCREPLY_ERROR;
        rest = line + len;
        rest_len = 0;
    } else if (p->n_values > 0) {
        return -1; /* only VALUE, END or an error may follow a VALUE */
    } else if (is_word(line, len, "STORED")) {
        r.kind = MCREPLY_STORED;
    } else if (is_word(line, len, "NOT_STORED")) {
        r.kind = MCREPLY_NOT_STORED;
    } else if (is_word(line, len, "EXISTS")) {
        r.kind = MCREPLY_EXISTS;
    } else if (is_word(line, len, "NOT_FOUND")) {
        r.kind = MCREPLY_NOT_FOUND;
    } else if (is_word(line, len, "DELETED")) {
        r.kind = MCREPLY_DELETED;
    } else if (is_word(line, len, "TOUCHED")) {
        r.kind = MCREPLY_TOUCHED;
    } else {
        return -1;
    }
    if (r.kind == MCREPLY_SERVER_ERROR || r.kind == MCREPLY_CLIENT_ERROR ||
        r.kind == MCREPLY_ERROR) {
        r.msg = rest;
        r.msg_len = rest_len;
    }
    emit(p, &r, cb, arg);
    return 0;
}

int mcreply_feed(struct mcreply_parser *p,
                 const char *data,
                 size_t len,
                 mcreply_reply_cb cb,
                 void *arg)
{
    const char *nl;
    const char *line;
    size_t line_len;
    size_t n;
    char want;

    while (len > 0) {
        switch (p->state) {
            case ST_DATA:
                n = len < p->data_left ? len : (size_t)p->data_left;
                data += n;
                len -= n;
                p->data_left -= n;
                if (p->data_left == 0) {
                    p->state = ST_CRLF;
                    p->crlf_seen = 0;
                }
                break;
            case ST_CRLF:
                want = p->crlf_seen == 0 ? '\r' : '\n';
                if (*data != want) {
                    return -1;
                }
                data++;
                len--;
                if (++p->crlf_seen == 2) {
                    p->state = ST_LINE;
                }
                break;
            default: /* ST_LINE */
                nl = memchr(data, '\n', len);
                n = nl ? (size_t)(nl - data) : len;
                if (nl != NULL && p->line_len == 0) {
                    line = data; /* whole line in this read: no copy */
                    line_len = n;
                } else {
                    /* +1: the '\r' of a line split between it and '\n' */
                    if (p->line_len + n > MCREPLY_LINE_MAX + 1) {
                        return -1;
                    }
                    memcpy(p->line + p->line_len, data, n);
                    p->line_len += n;
                    line = p->line;
                    line_len = p->line_len;
                }
                if (nl == NULL) {
                    return 0;
                }
                data += n + 1;
                len -= n + 1;
                p->line_len = 0;
                if (line_len > MCREPLY_LINE_MAX + 1 ||
                    handle_line(p, line, line_len, cb, arg) != 0) {
                    return -1;
                }
                break;
        }
    }
    return 0;
}
