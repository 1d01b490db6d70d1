/*
 * port_block: a block of loopback TCP ports for a test's listeners.
 *
 * Tests run in parallel (ctest -j) and each case of a test closes its
 * listeners and opens new ones, so a port being free a moment ago proves
 * nothing: a block is claimed with a lock file (/tmp/ringmq-test-port-*),
 * held until the process exits (the kernel drops it even after kill -9),
 * and another process never takes a claimed block. Within the claim, ports
 * left in TIME_WAIT by the process's earlier cases are fine (listeners set
 * SO_REUSEADDR); a block in which something else listens (a service of the
 * machine took port 2024 once) is skipped.
 *
 * Ranges in use: svc_env 2000..9199, test_group 10000..19999; the
 * integration tests take 20000..32000 and the kernel's ephemeral range
 * starts at 32768.
 */
#ifndef RINGMQ_TEST_PORT_BLOCK_H
#define RINGMQ_TEST_PORT_BLOCK_H

/* The first port of @size free ports among @blocks blocks from @first,
 * claimed by this process: the block claimed by an earlier call with the
 * same arguments when it is still free, else a new one, starting at the
 * pid's block. 0 if none is free. Not thread-safe. */
unsigned port_block(unsigned first, unsigned blocks, unsigned size);

#endif
