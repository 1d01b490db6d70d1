/*
 * port_block: a block of loopback TCP ports for a test's listeners, chosen
 * from the pid (parallel tests do not collide) and skipping any block in
 * which something already listens (a service of the machine took port 2024
 * once, and every test of that process failed).
 */
#ifndef RINGMQ_TEST_PORT_BLOCK_H
#define RINGMQ_TEST_PORT_BLOCK_H

/* The first port of @size free ports among @blocks blocks from @first,
 * starting at the pid's block; 0 if none is free. */
unsigned port_block(unsigned first, unsigned blocks, unsigned size);

#endif
