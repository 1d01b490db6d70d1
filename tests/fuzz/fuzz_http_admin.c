/*
 * fuzz_http_admin: libFuzzer target for the admin HTTP server's request
 * path (http_parser callbacks, limits, routing, response framing), driven
 * through http_admin__feed, so no bytes go through sockets. The server
 * exists once per process, on a loop that never runs: it only binds a
 * listener on 127.0.0.1 port 0 to be constructed.
 *
 * Input: byte 0 picks the read size (0 = everything at once); the rest is
 * what one client sends on one connection.
 *
 * Checked: the transcript (responses and whether the connection closes) is
 * the same whole and in chunks (the engine is resumable: how TCP splits
 * the stream changes no answer, except which error ends a bad request; see
 * same_but_last_error), and output begins with a status line. ASan/UBSan
 * catch the rest.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "common/http_admin.h"
#include "common/log.h"

static void check(int ok)
{
    if (!ok) {
        abort();
    }
}

/* @r (NUL-terminated) is exactly one response that ends the connection
 * for a bad request. */
static int is_final_error(const char *r)
{
    static const int codes[] = {400, 413, 414, 431, 505};
    size_t i;
    int status;

    if (strncmp(r, "HTTP/1.1 ", 9) != 0 || strstr(r + 9, "HTTP/1.1 ")) {
        return 0;
    }
    status = atoi(r + 9);
    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (status == codes[i]) {
            return strstr(r, "\r\nConnection: close\r\n\r\n") != NULL;
        }
    }
    return 0;
}

/* Transcripts may differ in one way only: which limit or syntax error ends
 * the connection. http_parser reports a token's bytes at the end of each
 * read, so a limit on that token can trip in small reads before a syntax
 * error later in the same token does, while all at once the syntax error
 * comes first. Everything answered before must be identical. */
static void same_but_last_error(struct buf *a, struct buf *b)
{
    size_t p = 0;
    char *ra, *rb;

    buf_append(a, "", 1); /* NUL-terminate (and make data non-NULL) */
    buf_append(b, "", 1);
    while (p < a->len && p < b->len && a->data[p] == b->data[p]) {
        p++;
    }
    /* Back to the start of the response where they diverge. */
    while (p > 0 && !(p + 9 <= a->len && p + 9 <= b->len &&
                      memcmp(a->data + p, "HTTP/1.1 ", 9) == 0 &&
                      memcmp(b->data + p, "HTTP/1.1 ", 9) == 0)) {
        p--;
    }
    ra = a->data + p;
    rb = b->data + p;
    check(is_final_error(ra) && is_final_error(rb));
}

static void h_echo(void *data, const char *path, const char *query,
                   struct http_admin_response *resp)
{
    (void)data;
    buf_printf(&resp->body, "%s?%s\n", path, query);
}

static void h_status(void *data, const char *path, const char *query,
                     struct http_admin_response *resp)
{
    (void)data;
    (void)path;
    resp->status = atoi(query);
    resp->content_type = HTTP_ADMIN_METRICS_CONTENT_TYPE;
}

static struct http_admin *server(void)
{
    static uv_loop_t loop;
    static struct http_admin *a;
    struct http_admin_config cfg = {0};
    char errmsg[256];

    if (a == NULL) {
        log_init("fuzz", LOG_ERROR);
        check(uv_loop_init(&loop) == 0);
        cfg.max_url_bytes = 512; /* small limits, so they are reached */
        cfg.max_header_bytes = 1024;
        a = http_admin_new(&loop, &cfg, errmsg, sizeof(errmsg));
        check(a != NULL);
        check(http_admin_route(a, "/", h_echo, NULL) == 0);
        check(http_admin_route(a, "/healthz", h_echo, NULL) == 0);
        check(http_admin_route(a, "/status", h_status, NULL) == 0);
    }
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_admin *a = server();
    struct buf whole, split;
    int c1, c2;
    size_t chunk;

    if (size < 1) {
        return 0;
    }
    chunk = data[0];
    buf_init(&whole);
    buf_init(&split);
    c1 = http_admin__feed(a, (const char *)data + 1, size - 1, 0, &whole);
    c2 = http_admin__feed(a, (const char *)data + 1, size - 1,
                          chunk ? chunk : 1, &split);
    check(c1 == c2);
    check(whole.len == 0 || (whole.len > 9 &&
                             memcmp(whole.data, "HTTP/1.1 ", 9) == 0));
    if (whole.len != split.len ||
        (whole.len > 0 && memcmp(whole.data, split.data, whole.len) != 0)) {
        same_but_last_error(&whole, &split);
    }
    buf_free(&whole);
    buf_free(&split);
    return 0;
}
