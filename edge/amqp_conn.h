/*
 * amqp_conn: one AMQP 0-9-1 client connection of the edge: protocol
 * header, negotiation, frames, heartbeats, back-pressure, connection
 * errors, teardown. Below the server (amqp_server.c, its registry), above
 * its channels (amqp_channel.h), which see it only as the struct chan_conn
 * it fills in (amqp_chan.h).
 *
 * The server lends each connection a struct amqp_conn_env: what it needs
 * of the edge (configuration, counters, broker calls, the blocked state)
 * and two callbacks, so the connection never calls the server.
 *
 * Ownership: the server starts and aborts connections; a connection frees
 * itself once torn down, its handles closed and no broker call holds a
 * reference on it. Everything runs on the loop thread.
 */
#ifndef RINGMQ_AMQP_CONN_H
#define RINGMQ_AMQP_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

struct amqp_conn;
struct amqp_server_config;
struct amqp_server_stats;
struct edge_calls;

/* Borrowed by every connection until its closed() ran. */
struct amqp_conn_env {
    uv_loop_t *loop;
    const struct amqp_server_config *cfg;
    struct amqp_server_stats *stats;
    struct edge_calls *calls;
    bool blocked; /* publishers are blocked (the owner's watermark check) */
    /* @c is torn down (it still exists until its handles close). */
    void (*gone)(struct amqp_conn *c, void *data);
    /* A connection's handles closed (one call per connection). */
    void (*closed)(void *data);
    void *data;
};

/* The owner's list link, kept in the connection, never read by it. */
struct amqp_conn_link {
    struct amqp_conn *prev;
    struct amqp_conn *next;
};

/* A connection with id @id and its handles (NULL when the TCP handle could
 * not be made); closed() follows once amqp_conn_start() was called. */
struct amqp_conn *amqp_conn_new(struct amqp_conn_env *env, uint64_t id);
/* Accept the pending connection of @listener and start. Returns 0, or -1
 * after tearing the connection down (gone() was called). */
int amqp_conn_start(struct amqp_conn *c, uv_stream_t *listener);
struct amqp_conn_link *amqp_conn_link(struct amqp_conn *c);
/* Close the socket at once (server close, fatal error); gone() is called. */
void amqp_conn_abort(struct amqp_conn *c);
/* Tell a client that understands it (connection.blocked), and stop or
 * resume reading a connection that published. */
void amqp_conn_set_blocked(struct amqp_conn *c, bool blocked);
/* Let every channel start what may start now (amqp_channel_pump): the
 * broker's view became routable, or held publishes may have waited too
 * long. */
void amqp_conn_pump_channels(struct amqp_conn *c);

#endif
