/*
 * nfq_delay: hold packets for N ms, the fault lab's "delay" nemesis (this
 * kernel has no netem).
 *
 *   nfq_delay --queue Q --delay-ms D [--jitter-ms J] [--seed S]
 *
 * Inside a network namespace, an iptables rule hands packets to NFQUEUE
 * queue Q, for example every packet from the other lab hosts:
 *
 *   iptables -A INPUT -s 10.77.0.0/24 -j NFQUEUE --queue-num Q --queue-bypass
 *
 * and this program, run in the same namespace, gives each one the ACCEPT
 * verdict D ms (plus 0..J ms, uniformly, which may reorder them) after it
 * arrived. --queue-bypass lets packets through while no program is bound,
 * and the queue is set fail-open, so an overflow passes packets instead of
 * dropping them: the nemesis adds delay, never loss.
 *
 * Single-threaded: poll() on the netlink socket with a timeout up to the
 * next release; held packets wait in a min-heap by release time. Only
 * packet metadata is copied from the kernel. SIGTERM/SIGINT release every
 * held packet at once and exit 0. Exit 1 when the queue cannot be bound
 * (not root, queue taken), 2 for bad flags.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libnetfilter_queue/libnetfilter_queue.h>

#define QUEUE_MAXLEN 65536
#define RCVBUF_BYTES (8 << 20)

struct held {
    uint64_t due_ns;
    uint64_t seq; /* arrival order: equal due times leave in that order */
    uint32_t id;
};

static struct {
    struct held *heap;
    size_t n, cap;
    uint64_t seq;
    unsigned delay_ms, jitter_ms;
    unsigned seed;
    uint64_t received, released, enobufs;
    struct nfq_q_handle *qh;
} st;

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int before(const struct held *a, const struct held *b)
{
    return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void swap(size_t i, size_t j)
{
    struct held t = st.heap[i];

    st.heap[i] = st.heap[j];
    st.heap[j] = t;
}

static int heap_push(struct held h)
{
    size_t i;

    if (st.n == st.cap) {
        size_t cap = st.cap ? st.cap * 2 : 1024;
        struct held *p = realloc(st.heap, cap * sizeof(*p));

        if (p == NULL) {
            return -1;
        }
        st.heap = p;
        st.cap = cap;
    }
    i = st.n++;
    st.heap[i] = h;
    while (i > 0 && before(&st.heap[i], &st.heap[(i - 1) / 2])) {
        swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    return 0;
}

static struct held heap_pop(void)
{
    struct held top = st.heap[0];
    size_t i = 0;

    st.heap[0] = st.heap[--st.n];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < st.n && before(&st.heap[l], &st.heap[m])) {
            m = l;
        }
        if (r < st.n && before(&st.heap[r], &st.heap[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        swap(i, m);
        i = m;
    }
    return top;
}

static void release(uint32_t id)
{
    nfq_set_verdict(st.qh, id, NF_ACCEPT, 0, NULL);
    st.released++;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg,
                     struct nfq_data *nfa, void *data)
{
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    struct held h;
    uint64_t extra_ms = 0;

    (void)qh;
    (void)msg;
    (void)data;
    if (ph == NULL) {
        return 0;
    }
    st.received++;
    if (st.jitter_ms > 0) {
        extra_ms = (uint64_t)rand_r(&st.seed) % (st.jitter_ms + 1);
    }
    h.id = ntohl(ph->packet_id);
    h.seq = st.seq++;
    h.due_ns = now_ns() + ((uint64_t)st.delay_ms + extra_ms) * 1000000u;
    if (heap_push(h) != 0) {
        release(h.id); /* out of memory: let it pass rather than hang it */
    }
    return 0;
}

/* Release what is due; returns the poll timeout in ms until the next. */
static int release_due(void)
{
    uint64_t now = now_ns();

    while (st.n > 0 && st.heap[0].due_ns <= now) {
        release(heap_pop().id);
    }
    if (st.n == 0) {
        return 1000;
    }
    return (int)((st.heap[0].due_ns - now + 999999) / 1000000);
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v > max) {
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: nfq_delay --queue Q --delay-ms D [--jitter-ms J] "
                    "[--seed S]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"queue", required_argument, NULL, 'q'},
        {"delay-ms", required_argument, NULL, 'd'},
        {"jitter-ms", required_argument, NULL, 'j'},
        {"seed", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    struct nfq_handle *h = NULL;
    struct sigaction sa;
    unsigned queue = 0;
    int have_queue = 0, have_delay = 0;
    char buf[65536] __attribute__((aligned));
    int fd, o, rc = 1;

    st.seed = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'q':
            if (parse_uint(optarg, 65535, &queue) != 0) {
                return usage();
            }
            have_queue = 1;
            break;
        case 'd':
            if (parse_uint(optarg, 60000, &st.delay_ms) != 0) {
                return usage();
            }
            have_delay = 1;
            break;
        case 'j':
            if (parse_uint(optarg, 60000, &st.jitter_ms) != 0) {
                return usage();
            }
            break;
        case 's':
            if (parse_uint(optarg, UINT32_MAX, &st.seed) != 0) {
                return usage();
            }
            break;
        default:
            return usage();
        }
    }
    if (!have_queue || !have_delay || optind != argc) {
        return usage();
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    h = nfq_open();
    if (h == NULL) {
        perror("nfq_delay: nfq_open");
        goto err;
    }
    st.qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
    if (st.qh == NULL) {
        fprintf(stderr, "nfq_delay: cannot bind queue %u (root? taken?)\n",
                queue);
        goto err;
    }
    if (nfq_set_mode(st.qh, NFQNL_COPY_META, 0) < 0) {
        perror("nfq_delay: nfq_set_mode");
        goto err;
    }
    nfq_set_queue_maxlen(st.qh, QUEUE_MAXLEN);
    /* Older kernels lack fail-open; delay still works, overflow drops. */
    if (nfq_set_queue_flags(st.qh, NFQA_CFG_F_FAIL_OPEN,
                            NFQA_CFG_F_FAIL_OPEN) < 0) {
        fprintf(stderr, "nfq_delay: fail-open not supported\n");
    }
    fd = nfq_fd(h);
    {
        int sz = RCVBUF_BYTES;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz));
    }
    fprintf(stderr, "nfq_delay: queue %u, delay %u ms, jitter %u ms\n", queue,
            st.delay_ms, st.jitter_ms);

    while (!stopping) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int timeout = release_due();
        ssize_t n;

        if (poll(&p, 1, timeout) < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("nfq_delay: poll");
            goto err;
        }
        if (!(p.revents & POLLIN)) {
            continue;
        }
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == ENOBUFS) {
                st.enobufs++; /* the kernel dropped notifications */
            } else if (errno != EAGAIN && errno != EINTR) {
                perror("nfq_delay: recv");
                goto err;
            }
            continue;
        }
        nfq_handle_packet(h, buf, (int)n);
    }
    rc = 0;

err:
    while (st.n > 0) {
        release(heap_pop().id);
    }
    fprintf(stderr,
            "nfq_delay: %" PRIu64 " packets, %" PRIu64 " released, %" PRIu64
            " ENOBUFS\n",
            st.received, st.released, st.enobufs);
    if (st.qh != NULL) {
        nfq_destroy_queue(st.qh);
    }
    if (h != NULL) {
        nfq_close(h);
    }
    free(st.heap);
    return rc;
}
