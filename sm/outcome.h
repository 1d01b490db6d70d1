/*
 * outcome: what became of a command sent towards a replicated state
 * machine. One vocabulary for the node's services (node/cache_svc,
 * node/mq_svc, node/meta_svc), the edges' broker contract
 * (edge/amqp_broker.h) and the internal RPC: proto/rpc.proto's RpcCode has
 * the same names and numbers (proto/rpc_frame.c asserts it), so a code
 * crosses the wire unchanged.
 *
 * Only OUTCOME_OK says the command was applied. OUTCOME_UNAVAILABLE is the
 * one outcome after which the command may have been applied (proposed, then
 * leadership was lost); every other one means nothing was proposed, so a
 * BUSY command may be sent again (after a pause) as it is.
 */
#ifndef RINGMQ_OUTCOME_H
#define RINGMQ_OUTCOME_H

enum outcome {
    OUTCOME_OK = 0,          /* applied: the result is valid */
    OUTCOME_NOT_LEADER = 1,  /* this replica does not lead: ask the leader
                                (a hint names it where known) */
    OUTCOME_NO_GROUP = 2,    /* this node hosts no such group */
    OUTCOME_BAD_REQUEST = 3, /* malformed or unknown command */
    OUTCOME_UNAVAILABLE = 4, /* no leader, or the outcome is unknown */
    OUTCOME_WRONG_EPOCH = 5, /* the key is not this shard's at that epoch */
    OUTCOME_TOO_LARGE = 6,   /* larger than the group's entry limit */
    OUTCOME_CLOSING = 7,     /* the service is shutting down */
    OUTCOME_BUSY = 8,        /* admission control: the group has too much
                                waiting to be proposed (raft/group.h,
                                RGROUP_EFULL); try again later */
    OUTCOME_EXPIRED = 9,     /* the request's deadline passed while its
                                command waited to be proposed */
    OUTCOME__COUNT
};

/* "ok", "not leader", ...; "?" for a value out of range. */
const char *outcome_name(enum outcome o);

#endif
