/*
 * rmember: membership changes (see member.h for the contract and group.h
 * for what users see).
 *
 * Direction: called by raft/group.c, never calls it. Raft calls change_cb
 * from inside its own code, where we must not start the next step or run
 * user code: change_cb only records the outcome, sets m->ready and wakes
 * the owner, whose loop handles call rmember_process(), which starts the
 * next step or completes. A change started on a member already in the
 * wanted state completes the same way, one loop turn later, so a callback
 * never runs inside the call that started it.
 */
#include "raft/member.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/invariant.h"
#include "common/log.h"
#include "raft/transport.h"

enum step { STEP_ADD, STEP_ASSIGN, STEP_REMOVE, STEP_NONE };

struct rmember_op {
    struct raft_change req;
    struct rmember *m;
    enum step step;
    bool remove;
    uint64_t id;
    char address[RGROUP_ADDR_MAX];
    int raft_status; /* of the finished step */
    rgroup_change_cb cb;
    void *data;
};

static const char *step_name(enum step s)
{
    switch (s) {
        case STEP_ADD:
            return "add";
        case STEP_ASSIGN:
            return "promote";
        case STEP_REMOVE:
            return "remove";
        default:
            return "none";
    }
}

static int status_of(int raft_rv)
{
    switch (raft_rv) {
        case 0:
            return RGROUP_OK;
        case RAFT_NOTLEADER:
            return RGROUP_ENOTLEADER;
        case RAFT_CANTCHANGE:
            return RGROUP_EBUSY;
        case RAFT_NOCONNECTION:
            return RGROUP_ECATCHUP;
        case RAFT_BADID:
        case RAFT_DUPLICATEID:
        case RAFT_DUPLICATEADDRESS:
        case RAFT_BADROLE:
            return RGROUP_EINVAL;
        case RAFT_LEADERSHIPLOST:
        case RAFT_SHUTDOWN:
            return RGROUP_EUNKNOWN;
        default:
            return RGROUP_EIO;
    }
}

void rmember_init(struct rmember *m,
                  struct raft *raft,
                  const char *name,
                  uint64_t self_id,
                  void (*wake)(void *data),
                  void *wake_data)
{
    memset(m, 0, sizeof *m);
    m->raft = raft;
    m->name = name;
    m->self_id = self_id;
    m->wake = wake;
    m->wake_data = wake_data;
}

bool rmember_pending(const struct rmember *m)
{
    return m->ready;
}

static void change_cb(struct raft_change *req, int status)
{
    struct rmember_op *op = req->data;

    /* one change at a time, and raft finishes each step once */
    INVARIANT(op->m->op == op || op->m->op == NULL);
    INVARIANT(!op->m->ready);
    op->raft_status = status;
    op->m->ready = true;
    op->m->wake(op->m->wake_data);
}

/* Propose @op's current step. 0 or a raft error (nothing proposed). */
static int start_step(struct rmember_op *op)
{
    struct raft *r = op->m->raft;

    op->req.data = op;
    switch (op->step) {
        case STEP_ADD:
            return raft_add(r, &op->req, op->id, op->address, change_cb);
        case STEP_ASSIGN:
            return raft_assign(r, &op->req, op->id, RAFT_VOTER, change_cb);
        case STEP_REMOVE:
            return raft_remove(r, &op->req, op->id, change_cb);
        default:
            return 0;
    }
}

static void complete(struct rmember *m, int status)
{
    struct rmember_op *op = m->op;

    INVARIANT(op != NULL);
    m->op = NULL;
    m->ready = false;
    if (status == RGROUP_OK && op->step == STEP_NONE) {
        log_info("raft group %s: membership: member %" PRIu64 " is %s already",
                 m->name, op->id, op->remove ? "no member" : "a voter");
    } else if (status == RGROUP_OK) {
        log_info("raft group %s: membership: %s of member %" PRIu64
                 " committed",
                 m->name, op->remove ? "removal" : "addition", op->id);
    } else {
        log_warn("raft group %s: membership: %s of member %" PRIu64
                 " failed: %s (%d)",
                 m->name, step_name(op->step), op->id,
                 raft_strerror(op->raft_status), op->raft_status);
    }
    op->cb(op->data, status);
    free(op);
}

void rmember_process(struct rmember *m)
{
    struct rmember_op *op = m->op;
    int rv;

    INVARIANT(op != NULL || !m->ready);
    if (op == NULL || !m->ready) {
        return;
    }
    m->ready = false;
    if (op->raft_status != 0 || op->step != STEP_ADD) {
        complete(m, status_of(op->raft_status));
        return;
    }
    log_info("raft group %s: membership: member %" PRIu64
             " (%s) added as spare; catching it up to promote it",
             m->name, op->id, op->address);
    op->step = STEP_ASSIGN;
    rv = start_step(op);
    if (rv != 0) {
        op->raft_status = rv;
        complete(m, status_of(rv));
    }
}

void rmember_close(struct rmember *m)
{
    struct rmember_op *op = m->op;
    int status;

    if (op == NULL) {
        return;
    }
    /* raft_close failed a step still in raft's hands (LEADERSHIPLOST)
     * already; a finished step keeps its own outcome */
    if (!m->ready) {
        op->raft_status = RAFT_SHUTDOWN;
    }
    status = status_of(op->raft_status);
    if (status == RGROUP_OK && op->step == STEP_ADD) {
        status = RGROUP_EUNKNOWN; /* a spare, never promoted */
    }
    complete(m, status);
}

static const struct raft_server *find_server(const struct rmember *m,
                                             uint64_t id)
{
    const struct raft_configuration *c = &m->raft->configuration;
    unsigned i;

    for (i = 0; i < c->n; i++) {
        if (c->servers[i].id == id) {
            return &c->servers[i];
        }
    }
    return NULL;
}

/* Whether a change may start: the owner's @gate, then one at a time. */
static int check_start(const struct rmember *m, int gate)
{
    if (gate != RGROUP_OK) {
        return gate;
    }
    if (m->op != NULL) {
        return RGROUP_EBUSY;
    }
    return RGROUP_OK;
}

/* Take ownership of @op as the group's change and run its first step; a
 * change with nothing to do completes on the next loop turn. */
static int begin(struct rmember *m, struct rmember_op *op)
{
    int rv = start_step(op);

    if (rv != 0) {
        log_warn("raft group %s: membership: %s of member %" PRIu64
                 " refused: %s (%d)",
                 m->name, step_name(op->step), op->id, raft_strerror(rv), rv);
        free(op);
        return status_of(rv);
    }
    INVARIANT(m->op == NULL); /* check_start */
    m->op = op;
    if (op->step == STEP_NONE) {
        op->raft_status = 0;
        m->ready = true;
        m->wake(m->wake_data);
    } else {
        log_info("raft group %s: membership: %s of member %" PRIu64 " proposed",
                 m->name, step_name(op->step), op->id);
    }
    return RGROUP_OK;
}

static struct rmember_op *op_new(struct rmember *m,
                                 uint64_t id,
                                 rgroup_change_cb cb,
                                 void *data)
{
    struct rmember_op *op = xcalloc(1, sizeof *op);

    op->m = m;
    op->id = id;
    op->cb = cb;
    op->data = data;
    return op;
}

int rmember_add_voter(struct rmember *m,
                      int gate,
                      uint64_t id,
                      const char *address,
                      rgroup_change_cb cb,
                      void *data)
{
    const struct raft_configuration *c = &m->raft->configuration;
    const struct raft_server *s;
    struct rmember_op *op;
    char host[256];
    int port;
    unsigned i;
    int rv;

    if (id == 0 || cb == NULL || address == NULL ||
        strlen(address) >= RGROUP_ADDR_MAX ||
        rtransport_split(address, host, sizeof host, &port) != 0 || port == 0) {
        return RGROUP_EINVAL;
    }
    rv = check_start(m, gate);
    if (rv != RGROUP_OK) {
        return rv;
    }
    for (i = 0; i < c->n; i++) {
        if (c->servers[i].id != id &&
            strcmp(c->servers[i].address, address) == 0) {
            log_warn("raft group %s: membership: %s is member %" PRIu64
                     "'s address",
                     m->name, address, (uint64_t)c->servers[i].id);
            return RGROUP_EINVAL;
        }
    }
    s = find_server(m, id);
    if (s != NULL && strcmp(s->address, address) != 0) {
        log_warn("raft group %s: membership: member %" PRIu64
                 " is at %s, "
                 "not %s: remove it first",
                 m->name, id, s->address, address);
        return RGROUP_EINVAL;
    }
    op = op_new(m, id, cb, data);
    snprintf(op->address, sizeof op->address, "%s", address);
    if (s == NULL) {
        op->step = STEP_ADD;
    } else if (s->role != RAFT_VOTER) {
        op->step = STEP_ASSIGN; /* an earlier add stopped half way */
    } else {
        op->step = STEP_NONE;
    }
    return begin(m, op);
}

/* The voter with the longest log we know of, other than us: the one most
 * likely to win at once (0 if none). */
static uint64_t transfer_target(const struct rmember *m)
{
    const struct raft_configuration *c = &m->raft->configuration;
    uint64_t best = 0;
    raft_index best_match = 0;
    unsigned i;

    for (i = 0; i < c->n; i++) {
        raft_index match;

        if (c->servers[i].id == m->self_id ||
            c->servers[i].role != RAFT_VOTER) {
            continue;
        }
        match = m->raft->leader_state.progress != NULL
                    ? m->raft->leader_state.progress[i].match_index
                    : 0;
        if (best == 0 || match > best_match) {
            best = c->servers[i].id;
            best_match = match;
        }
    }
    return best;
}

static void transfer_cb(struct raft_transfer *req)
{
    free(req);
}

/* Ask raft to hand leadership to transfer_target(): RGROUP_OK when asked
 * (or already handing over), else the refusal's status. */
static int hand_off(struct rmember *m, const char *why)
{
    struct raft_transfer *t;
    uint64_t to;
    int rv;

    if (m->raft->transfer != NULL) {
        return RGROUP_OK; /* handing over already */
    }
    t = xcalloc(1, sizeof *t);
    to = transfer_target(m);
    rv = raft_transfer(m->raft, t, to, transfer_cb);
    if (rv != 0) {
        free(t);
        log_warn(
            "raft group %s: membership: cannot hand leadership to "
            "%" PRIu64 " %s: %s (%d)",
            m->name, to, why, raft_strerror(rv), rv);
        return status_of(rv);
    }
    log_info("raft group %s: membership: %s: leadership goes to %" PRIu64,
             m->name, why, to);
    return RGROUP_OK;
}

int rmember_hand_off(struct rmember *m, int gate)
{
    if (gate != RGROUP_OK) {
        return gate;
    }
    return hand_off(m, "before stopping");
}

int rmember_remove(struct rmember *m,
                   int gate,
                   uint64_t id,
                   rgroup_change_cb cb,
                   void *data)
{
    const struct raft_configuration *c = &m->raft->configuration;
    const struct raft_server *s;
    struct rmember_op *op;
    unsigned voters = 0;
    unsigned i;
    int rv;

    if (id == 0 || cb == NULL) {
        return RGROUP_EINVAL;
    }
    rv = check_start(m, gate);
    if (rv != RGROUP_OK) {
        return rv;
    }
    for (i = 0; i < c->n; i++) {
        voters += c->servers[i].role == RAFT_VOTER;
    }
    s = find_server(m, id);
    if (s != NULL && s->role == RAFT_VOTER && voters == 1) {
        return RGROUP_EINVAL;
    }
    if (id == m->self_id) {
        /* a leader that removes itself would go on leading a group it is
         * no longer part of until the entry commits; hand over instead and
         * let the caller ask the next leader */
        rv = hand_off(m, "before removing myself");
        return rv == RGROUP_OK ? RGROUP_ESELF : rv;
    }
    op = op_new(m, id, cb, data);
    op->remove = true;
    op->step = s != NULL ? STEP_REMOVE : STEP_NONE;
    return begin(m, op);
}

unsigned rmember_list(const struct rmember *m,
                      struct rgroup_member_info *out,
                      unsigned max)
{
    const struct raft_configuration *c = &m->raft->configuration;
    unsigned i;

    for (i = 0; i < c->n && i < max; i++) {
        out[i].id = c->servers[i].id;
        snprintf(out[i].raft_address, sizeof out[i].raft_address, "%s",
                 c->servers[i].address);
        switch (c->servers[i].role) {
            case RAFT_VOTER:
                out[i].role = "voter";
                break;
            case RAFT_STANDBY:
                out[i].role = "standby";
                break;
            default:
                out[i].role = "spare";
                break;
        }
    }
    return c->n;
}
