/*
 * ring_vectors: fixed ketama vectors produced by libmemcached 1.1.4 (Debian 12
 * libmemcached-dev), for tests/unit/common/test_ring.c. Data only; do not edit.
 *
 * How they were made: a throwaway C program (not committed) linked with
 * `pkg-config --libs libmemcached` did, per server list,
 *     memcached_create(NULL);
 *     memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
 *                            MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
 *     memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
 *     memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_HASH,
 *                            MEMCACHED_HASH_MD5);
 *     memcached_server_add_with_weight(m, host, port, weight);   (each)
 * checked that the behaviours read back as weighted ketama with md5 key and
 * distribution hashes, and printed memcached_generate_hash(m, key, len) (the
 * server index) for every key, memcached_generate_hash_value(key, len,
 * MEMCACHED_HASH_MD5) for the hashes, and, reading the memcached_st's ketama
 * continuum (items {uint32 index; uint32 value}), its point count and an
 * FNV-1a 64 digest over (value, index) as little-endian bytes in order.
 * Each node's name is derived from (host, port) by libmemcached's rule:
 * "host" when port is 11211, else "host:port"; the vectors agreeing with
 * common/ring is what proves that rule.
 */
#ifndef RINGMQ_TEST_RING_VECTORS_H
#define RINGMQ_TEST_RING_VECTORS_H

#include <stdint.h>

#include "common/ring.h"

#define RV_NKEYS 200 /* keys "key:0" .. "key:199" */
#define RV_MAX_NODES 5

struct rv_config {
    const char *id;
    unsigned n;
    struct ring_node nodes[RV_MAX_NODES]; /* libmemcached name rule applied */
    unsigned points;    /* continuum_points_counter */
    uint64_t digest;    /* FNV-1a 64 of (hash, index) LE, in ring order */
    unsigned empty;     /* server of the empty key */
    unsigned k250;      /* server of 250 x 'k' */
    unsigned char map[RV_NKEYS]; /* server of "key:<i>" */
};

static const struct rv_config rv_configs[] = {
    {"equal_2", 2,
     {{"127.0.0.1", 1} /* 127.0.0.1:11211 */,
      {"127.0.0.1:11212", 1} /* 127.0.0.1:11212 */},
     320, 0x5e070aeb3b934bf2ULL,
     0, 1,
     {1,0,0,0,0,1,0,0,0,1,0,0,0,1,0,1,0,0,1,0,1,0,1,0,1,
      0,0,0,0,0,0,0,0,1,0,1,0,0,1,1,1,1,0,0,1,1,0,0,1,1,
      0,1,1,1,1,1,0,1,0,0,0,1,0,1,0,0,0,0,0,0,1,1,0,0,0,
      1,1,1,1,0,0,1,1,1,1,0,0,0,0,0,0,0,0,0,1,1,1,1,0,0,
      0,0,1,1,1,0,1,1,0,1,0,1,1,1,0,0,1,0,1,0,1,0,0,1,0,
      1,1,1,0,0,0,1,1,1,1,1,0,1,1,1,1,1,0,1,1,0,1,0,0,0,
      1,1,0,1,0,1,1,0,0,0,1,1,0,1,1,1,0,0,1,0,1,0,0,0,1,
      1,0,0,1,1,1,1,1,0,0,1,1,1,1,1,1,0,0,1,0,0,0,0,0,1}},
    {"weights_1_2", 2,
     {{"127.0.0.1", 1} /* 127.0.0.1:11211 */,
      {"127.0.0.1:11212", 2} /* 127.0.0.1:11212 */},
     316, 0x607aaffab2bde15cULL,
     0, 1,
     {1,0,0,1,0,1,0,1,0,1,0,1,0,1,0,1,0,0,1,0,1,0,1,0,1,
      0,0,1,0,0,0,0,1,1,0,1,1,0,1,1,1,1,1,0,1,1,0,0,1,1,
      0,1,1,1,1,1,1,1,0,0,0,1,0,1,0,0,1,0,0,1,1,1,1,1,0,
      1,1,1,1,0,0,1,1,1,1,0,0,0,0,1,0,0,0,0,1,1,1,1,0,0,
      0,0,1,1,1,1,1,1,0,1,0,1,1,1,0,0,1,1,1,0,1,0,0,1,1,
      1,1,1,1,0,0,1,1,1,1,1,0,1,1,1,1,1,0,1,1,1,1,0,0,1,
      1,1,1,1,0,1,1,0,1,1,1,1,0,1,1,1,0,0,1,1,1,0,0,0,1,
      1,0,0,1,1,1,1,1,0,0,1,1,1,1,1,1,0,0,1,0,0,0,0,1,1}},
    {"weights_1_2_3", 3,
     {{"10.0.1.1", 1} /* 10.0.1.1:11211 */,
      {"10.0.1.2", 2} /* 10.0.1.2:11211 */,
      {"cache-3.example.com:22122", 3} /* cache-3.example.com:22122 */},
     480, 0xde52105e3422cdb0ULL,
     1, 1,
     {2,2,2,2,2,2,2,2,2,0,2,2,2,1,2,1,1,2,2,1,2,2,0,1,2,
      2,0,2,2,1,2,1,1,2,1,2,2,2,2,2,2,1,1,2,2,1,1,2,1,2,
      1,1,1,2,1,2,1,2,1,2,2,2,2,2,1,2,1,2,1,1,0,0,1,2,2,
      2,2,0,2,2,2,2,2,1,2,2,0,0,2,2,2,1,0,0,1,2,1,1,0,1,
      0,2,1,2,2,2,2,0,2,1,2,2,2,2,2,1,2,2,1,1,1,0,2,1,2,
      2,2,2,2,2,1,2,2,2,2,2,0,2,0,2,1,0,2,2,2,2,1,0,1,1,
      1,0,1,0,0,2,1,0,1,0,0,2,1,1,2,1,1,2,2,2,2,2,2,2,0,
      2,1,1,1,2,2,2,2,2,2,2,2,2,2,2,2,2,0,2,2,2,2,2,2,2}},
    {"mixed_5", 5,
     {{"a.example", 1} /* a.example:11211 */,
      {"b.example", 1} /* b.example:11211 */,
      {"c.example:1", 3} /* c.example:1 */,
      {"d.example:65535", 7} /* d.example:65535 */,
      {"e.example", 100} /* e.example:11211 */},
     788, 0x461ffef018848618ULL,
     4, 4,
     {4,4,4,4,4,4,4,3,4,4,4,2,4,4,4,4,4,4,4,4,4,4,4,4,4,
      4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,
      4,4,4,4,4,4,4,4,4,4,3,4,4,4,4,4,4,4,4,4,4,4,4,4,4,
      4,2,4,4,4,4,4,4,4,4,4,4,4,4,4,2,4,4,4,4,4,4,4,4,4,
      4,3,4,4,4,2,0,4,4,4,4,4,4,4,3,4,4,4,4,3,4,4,4,4,4,
      4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,3,4,4,4,
      4,4,4,2,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,
      4,4,4,4,2,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4}},
};

/* memcached_generate_hash_value(key, len, MEMCACHED_HASH_MD5) */
struct rv_hash {
    const char *key;
    uint32_t hash;
};

static const struct rv_hash rv_hashes[] = {
    {"", 0xd98c1dd4u},
    {"a", 0xb975c10cu},
    {"key:0", 0x82ab86dfu},
    {"key:1", 0x3cb0c47au},
    {"key:199", 0x895d6828u},
    {"foo", 0xdb18bdacu},
    {"hello world", 0xbb3bb65eu},
    {"ringmq", 0x492a241au},
    {"user:1234:profile", 0xf72b6854u},
    {"queue/%2F/orders", 0xc8d948d5u},
};

/* ... of 250 x 'k' */
#define RV_HASH_K250 0x7f7b2f93u

/* Total points, node i named "h<i>" (port 11211), i < n, n = 1..64.
 * rv_eq_points: every weight 1.  rv_ramp_points: weight of node i = i + 1. */
static const unsigned rv_eq_points[64] = {
    160, 320, 480, 640, 800, 960, 1120, 1280, 1440, 1600,
    1760, 1920, 2080, 2240, 2400, 2560, 2720, 2880, 3040, 3200,
    3360, 3520, 3680, 3840, 3900, 4160, 4320, 4480, 4640, 4800,
    4960, 5120, 5280, 5440, 5600, 5760, 5920, 6080, 6240, 6400,
    6560, 6720, 6880, 7040, 7200, 7360, 7332, 7680, 7840, 7800,
    8160, 8320, 8480, 8640, 8580, 8960, 9120, 9280, 9440, 9600,
    9516, 9920, 10080, 10240};

static const unsigned rv_ramp_points[64] = {
    160, 316, 480, 640, 792, 948, 1120, 1264, 1440, 1580,
    1744, 1896, 2056, 2220, 2400, 2528, 2688, 2844, 3036, 3160,
    3320, 3476, 3636, 3800, 3948, 4108, 4272, 4424, 4600, 4740,
    4912, 5056, 5216, 5380, 5536, 5688, 5848, 6004, 6240, 6320,
    6480, 6636, 6800, 6948, 7112, 7268, 7440, 7584, 7760, 7900,
    8064, 8216, 8376, 8540, 8692, 8848, 9008, 9164, 9360, 9480,
    9636, 9796, 9984, 10120};

#endif
