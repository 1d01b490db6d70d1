/*
 * test_amqp_codec: AMQP 0-9-1 frame, field table and method codec.
 *
 * The reference bytes are real: pika_stream is everything pika 1.2 (Debian
 * python3-pika) sent to a fake broker for connect, exchange/queue declare
 * with arguments, bind, qos, a mandatory publish with all kinds of headers,
 * consume, cancel and close; rabbit_connection_start is the connection.start
 * a RabbitMQ 3.10 server sends, built by hand from the spec. Everything
 * that decodes must re-encode to the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "proto/amqp_codec.h"
#include "proto/amqp_frame.h"
#include "proto/amqp_method.h"
#include "proto/amqp_table.h"

/* Captured by a python listener from pika 1.2 (see file comment). */
static const uint8_t pika_stream[957] = {
    0x41, 0x4d, 0x51, 0x50, 0x00, 0x00, 0x09, 0x01, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x22, 0x00, 0x0a, 0x00, 0x0b, 0x00, 0x00, 0x00, 0xfe, 0x07,
    0x70, 0x72, 0x6f, 0x64, 0x75, 0x63, 0x74, 0x53, 0x00, 0x00, 0x00, 0x1a,
    0x50, 0x69, 0x6b, 0x61, 0x20, 0x50, 0x79, 0x74, 0x68, 0x6f, 0x6e, 0x20,
    0x43, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x20, 0x4c, 0x69, 0x62, 0x72, 0x61,
    0x72, 0x79, 0x08, 0x70, 0x6c, 0x61, 0x74, 0x66, 0x6f, 0x72, 0x6d, 0x53,
    0x00, 0x00, 0x00, 0x0d, 0x50, 0x79, 0x74, 0x68, 0x6f, 0x6e, 0x20, 0x33,
    0x2e, 0x31, 0x31, 0x2e, 0x32, 0x0c, 0x63, 0x61, 0x70, 0x61, 0x62, 0x69,
    0x6c, 0x69, 0x74, 0x69, 0x65, 0x73, 0x46, 0x00, 0x00, 0x00, 0x6f, 0x1c,
    0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x69,
    0x6f, 0x6e, 0x5f, 0x66, 0x61, 0x69, 0x6c, 0x75, 0x72, 0x65, 0x5f, 0x63,
    0x6c, 0x6f, 0x73, 0x65, 0x74, 0x01, 0x0a, 0x62, 0x61, 0x73, 0x69, 0x63,
    0x2e, 0x6e, 0x61, 0x63, 0x6b, 0x74, 0x01, 0x12, 0x63, 0x6f, 0x6e, 0x6e,
    0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x2e, 0x62, 0x6c, 0x6f, 0x63, 0x6b,
    0x65, 0x64, 0x74, 0x01, 0x16, 0x63, 0x6f, 0x6e, 0x73, 0x75, 0x6d, 0x65,
    0x72, 0x5f, 0x63, 0x61, 0x6e, 0x63, 0x65, 0x6c, 0x5f, 0x6e, 0x6f, 0x74,
    0x69, 0x66, 0x79, 0x74, 0x01, 0x12, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x73,
    0x68, 0x65, 0x72, 0x5f, 0x63, 0x6f, 0x6e, 0x66, 0x69, 0x72, 0x6d, 0x73,
    0x74, 0x01, 0x0b, 0x69, 0x6e, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74, 0x69,
    0x6f, 0x6e, 0x53, 0x00, 0x00, 0x00, 0x18, 0x53, 0x65, 0x65, 0x20, 0x68,
    0x74, 0x74, 0x70, 0x3a, 0x2f, 0x2f, 0x70, 0x69, 0x6b, 0x61, 0x2e, 0x72,
    0x74, 0x66, 0x64, 0x2e, 0x6f, 0x72, 0x67, 0x07, 0x76, 0x65, 0x72, 0x73,
    0x69, 0x6f, 0x6e, 0x53, 0x00, 0x00, 0x00, 0x05, 0x31, 0x2e, 0x32, 0x2e,
    0x30, 0x05, 0x50, 0x4c, 0x41, 0x49, 0x4e, 0x00, 0x00, 0x00, 0x0c, 0x00,
    0x67, 0x75, 0x65, 0x73, 0x74, 0x00, 0x67, 0x75, 0x65, 0x73, 0x74, 0x05,
    0x65, 0x6e, 0x5f, 0x55, 0x53, 0xce, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x0c, 0x00, 0x0a, 0x00, 0x1f, 0x07, 0xff, 0x00, 0x02, 0x00, 0x00, 0x00,
    0x3c, 0xce, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0a, 0x00,
    0x28, 0x01, 0x2f, 0x00, 0x01, 0xce, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x05, 0x00, 0x14, 0x00, 0x0a, 0x00, 0xce, 0x01, 0x00, 0x01, 0x00, 0x00,
    0x00, 0x30, 0x00, 0x28, 0x00, 0x0a, 0x00, 0x00, 0x04, 0x6c, 0x6f, 0x67,
    0x73, 0x05, 0x74, 0x6f, 0x70, 0x69, 0x63, 0x02, 0x00, 0x00, 0x00, 0x1a,
    0x12, 0x61, 0x6c, 0x74, 0x65, 0x72, 0x6e, 0x61, 0x74, 0x65, 0x2d, 0x65,
    0x78, 0x63, 0x68, 0x61, 0x6e, 0x67, 0x65, 0x53, 0x00, 0x00, 0x00, 0x02,
    0x61, 0x65, 0xce, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x50, 0x00, 0x32,
    0x00, 0x0a, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x44, 0x0d, 0x78,
    0x2d, 0x6d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x2d, 0x74, 0x74, 0x6c,
    0x49, 0x00, 0x00, 0xea, 0x60, 0x0c, 0x78, 0x2d, 0x6d, 0x61, 0x78, 0x2d,
    0x6c, 0x65, 0x6e, 0x67, 0x74, 0x68, 0x49, 0x00, 0x00, 0x00, 0x0a, 0x16,
    0x78, 0x2d, 0x64, 0x65, 0x61, 0x64, 0x2d, 0x6c, 0x65, 0x74, 0x74, 0x65,
    0x72, 0x2d, 0x65, 0x78, 0x63, 0x68, 0x61, 0x6e, 0x67, 0x65, 0x53, 0x00,
    0x00, 0x00, 0x03, 0x64, 0x6c, 0x78, 0xce, 0x01, 0x00, 0x01, 0x00, 0x00,
    0x00, 0x23, 0x00, 0x32, 0x00, 0x14, 0x00, 0x00, 0x0b, 0x61, 0x6d, 0x71,
    0x2e, 0x67, 0x65, 0x6e, 0x2d, 0x41, 0x62, 0x43, 0x04, 0x6c, 0x6f, 0x67,
    0x73, 0x06, 0x6b, 0x65, 0x72, 0x6e, 0x2e, 0x2a, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xce, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x3c, 0x00,
    0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0xce, 0x01, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x16, 0x00, 0x3c, 0x00, 0x28, 0x00, 0x00, 0x04, 0x6c,
    0x6f, 0x67, 0x73, 0x09, 0x6b, 0x65, 0x72, 0x6e, 0x2e, 0x63, 0x72, 0x69,
    0x74, 0x01, 0xce, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x94, 0x00, 0x3c,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0xb6, 0xc8,
    0x0a, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, 0x00,
    0x00, 0x00, 0x4e, 0x01, 0x78, 0x49, 0x00, 0x00, 0x00, 0x01, 0x03, 0x64,
    0x65, 0x63, 0x44, 0x02, 0x00, 0x00, 0x00, 0x7d, 0x02, 0x74, 0x73, 0x54,
    0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xf1, 0x00, 0x03, 0x72, 0x61, 0x77,
    0x78, 0x00, 0x00, 0x00, 0x02, 0x00, 0xff, 0x01, 0x6c, 0x41, 0x00, 0x00,
    0x00, 0x0b, 0x49, 0x00, 0x00, 0x00, 0x01, 0x53, 0x00, 0x00, 0x00, 0x01,
    0x61, 0x01, 0x6e, 0x56, 0x01, 0x62, 0x74, 0x01, 0x03, 0x62, 0x69, 0x67,
    0x6c, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x63,
    0x31, 0x15, 0x61, 0x6d, 0x71, 0x2e, 0x72, 0x61, 0x62, 0x62, 0x69, 0x74,
    0x6d, 0x71, 0x2e, 0x72, 0x65, 0x70, 0x6c, 0x79, 0x2d, 0x74, 0x6f, 0x02,
    0x6d, 0x31, 0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xf1, 0x00, 0x03, 0x61,
    0x70, 0x70, 0xce, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x48, 0x65,
    0x6c, 0x6c, 0x6f, 0x20, 0x57, 0x6f, 0x72, 0x6c, 0x64, 0x21, 0xce, 0x01,
    0x00, 0x01, 0x00, 0x00, 0x00, 0x3e, 0x00, 0x3c, 0x00, 0x14, 0x00, 0x00,
    0x0b, 0x61, 0x6d, 0x71, 0x2e, 0x67, 0x65, 0x6e, 0x2d, 0x41, 0x62, 0x43,
    0x26, 0x63, 0x74, 0x61, 0x67, 0x31, 0x2e, 0x38, 0x64, 0x66, 0x35, 0x65,
    0x30, 0x39, 0x61, 0x39, 0x35, 0x62, 0x66, 0x34, 0x33, 0x39, 0x33, 0x38,
    0x61, 0x64, 0x33, 0x39, 0x32, 0x31, 0x63, 0x33, 0x35, 0x39, 0x37, 0x66,
    0x32, 0x39, 0x34, 0x00, 0x00, 0x00, 0x00, 0x00, 0xce, 0x01, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x2c, 0x00, 0x3c, 0x00, 0x1e, 0x26, 0x63, 0x74, 0x61,
    0x67, 0x31, 0x2e, 0x38, 0x64, 0x66, 0x35, 0x65, 0x30, 0x39, 0x61, 0x39,
    0x35, 0x62, 0x66, 0x34, 0x33, 0x39, 0x33, 0x38, 0x61, 0x64, 0x33, 0x39,
    0x32, 0x31, 0x63, 0x33, 0x35, 0x39, 0x37, 0x66, 0x32, 0x39, 0x34, 0x00,
    0xce, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x14, 0x00, 0x28,
    0x00, 0xc8, 0x0f, 0x4e, 0x6f, 0x72, 0x6d, 0x61, 0x6c, 0x20, 0x73, 0x68,
    0x75, 0x74, 0x64, 0x6f, 0x77, 0x6e, 0x00, 0x00, 0x00, 0x00, 0xce, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x0a, 0x00, 0x32, 0x00, 0xc8,
    0x0f, 0x4e, 0x6f, 0x72, 0x6d, 0x61, 0x6c, 0x20, 0x73, 0x68, 0x75, 0x74,
    0x64, 0x6f, 0x77, 0x6e, 0x00, 0x00, 0x00, 0x00, 0xce,
};

static const uint8_t rabbit_connection_start[511] = {
    0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0xf7, 0x00, 0x0a, 0x00, 0x0a, 0x00,
    0x09, 0x00, 0x00, 0x01, 0xd2, 0x0c, 0x63, 0x61, 0x70, 0x61, 0x62, 0x69,
    0x6c, 0x69, 0x74, 0x69, 0x65, 0x73, 0x46, 0x00, 0x00, 0x00, 0xc7, 0x12,
    0x70, 0x75, 0x62, 0x6c, 0x69, 0x73, 0x68, 0x65, 0x72, 0x5f, 0x63, 0x6f,
    0x6e, 0x66, 0x69, 0x72, 0x6d, 0x73, 0x74, 0x01, 0x1a, 0x65, 0x78, 0x63,
    0x68, 0x61, 0x6e, 0x67, 0x65, 0x5f, 0x65, 0x78, 0x63, 0x68, 0x61, 0x6e,
    0x67, 0x65, 0x5f, 0x62, 0x69, 0x6e, 0x64, 0x69, 0x6e, 0x67, 0x73, 0x74,
    0x01, 0x0a, 0x62, 0x61, 0x73, 0x69, 0x63, 0x2e, 0x6e, 0x61, 0x63, 0x6b,
    0x74, 0x01, 0x16, 0x63, 0x6f, 0x6e, 0x73, 0x75, 0x6d, 0x65, 0x72, 0x5f,
    0x63, 0x61, 0x6e, 0x63, 0x65, 0x6c, 0x5f, 0x6e, 0x6f, 0x74, 0x69, 0x66,
    0x79, 0x74, 0x01, 0x12, 0x63, 0x6f, 0x6e, 0x6e, 0x65, 0x63, 0x74, 0x69,
    0x6f, 0x6e, 0x2e, 0x62, 0x6c, 0x6f, 0x63, 0x6b, 0x65, 0x64, 0x74, 0x01,
    0x13, 0x63, 0x6f, 0x6e, 0x73, 0x75, 0x6d, 0x65, 0x72, 0x5f, 0x70, 0x72,
    0x69, 0x6f, 0x72, 0x69, 0x74, 0x69, 0x65, 0x73, 0x74, 0x01, 0x1c, 0x61,
    0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x69, 0x6f,
    0x6e, 0x5f, 0x66, 0x61, 0x69, 0x6c, 0x75, 0x72, 0x65, 0x5f, 0x63, 0x6c,
    0x6f, 0x73, 0x65, 0x74, 0x01, 0x10, 0x70, 0x65, 0x72, 0x5f, 0x63, 0x6f,
    0x6e, 0x73, 0x75, 0x6d, 0x65, 0x72, 0x5f, 0x71, 0x6f, 0x73, 0x74, 0x01,
    0x0f, 0x64, 0x69, 0x72, 0x65, 0x63, 0x74, 0x5f, 0x72, 0x65, 0x70, 0x6c,
    0x79, 0x5f, 0x74, 0x6f, 0x74, 0x01, 0x0c, 0x63, 0x6c, 0x75, 0x73, 0x74,
    0x65, 0x72, 0x5f, 0x6e, 0x61, 0x6d, 0x65, 0x53, 0x00, 0x00, 0x00, 0x10,
    0x72, 0x61, 0x62, 0x62, 0x69, 0x74, 0x40, 0x6c, 0x6f, 0x63, 0x61, 0x6c,
    0x68, 0x6f, 0x73, 0x74, 0x09, 0x63, 0x6f, 0x70, 0x79, 0x72, 0x69, 0x67,
    0x68, 0x74, 0x53, 0x00, 0x00, 0x00, 0x37, 0x43, 0x6f, 0x70, 0x79, 0x72,
    0x69, 0x67, 0x68, 0x74, 0x20, 0x28, 0x63, 0x29, 0x20, 0x32, 0x30, 0x30,
    0x37, 0x2d, 0x32, 0x30, 0x32, 0x32, 0x20, 0x56, 0x4d, 0x77, 0x61, 0x72,
    0x65, 0x2c, 0x20, 0x49, 0x6e, 0x63, 0x2e, 0x20, 0x6f, 0x72, 0x20, 0x69,
    0x74, 0x73, 0x20, 0x61, 0x66, 0x66, 0x69, 0x6c, 0x69, 0x61, 0x74, 0x65,
    0x73, 0x2e, 0x0b, 0x69, 0x6e, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74, 0x69,
    0x6f, 0x6e, 0x53, 0x00, 0x00, 0x00, 0x39, 0x4c, 0x69, 0x63, 0x65, 0x6e,
    0x73, 0x65, 0x64, 0x20, 0x75, 0x6e, 0x64, 0x65, 0x72, 0x20, 0x74, 0x68,
    0x65, 0x20, 0x4d, 0x50, 0x4c, 0x20, 0x32, 0x2e, 0x30, 0x2e, 0x20, 0x57,
    0x65, 0x62, 0x73, 0x69, 0x74, 0x65, 0x3a, 0x20, 0x68, 0x74, 0x74, 0x70,
    0x73, 0x3a, 0x2f, 0x2f, 0x72, 0x61, 0x62, 0x62, 0x69, 0x74, 0x6d, 0x71,
    0x2e, 0x63, 0x6f, 0x6d, 0x08, 0x70, 0x6c, 0x61, 0x74, 0x66, 0x6f, 0x72,
    0x6d, 0x53, 0x00, 0x00, 0x00, 0x11, 0x45, 0x72, 0x6c, 0x61, 0x6e, 0x67,
    0x2f, 0x4f, 0x54, 0x50, 0x20, 0x32, 0x35, 0x2e, 0x32, 0x2e, 0x33, 0x07,
    0x70, 0x72, 0x6f, 0x64, 0x75, 0x63, 0x74, 0x53, 0x00, 0x00, 0x00, 0x08,
    0x52, 0x61, 0x62, 0x62, 0x69, 0x74, 0x4d, 0x51, 0x07, 0x76, 0x65, 0x72,
    0x73, 0x69, 0x6f, 0x6e, 0x53, 0x00, 0x00, 0x00, 0x06, 0x33, 0x2e, 0x31,
    0x30, 0x2e, 0x38, 0x00, 0x00, 0x00, 0x0e, 0x41, 0x4d, 0x51, 0x50, 0x4c,
    0x41, 0x49, 0x4e, 0x20, 0x50, 0x4c, 0x41, 0x49, 0x4e, 0x00, 0x00, 0x00,
    0x05, 0x65, 0x6e, 0x5f, 0x55, 0x53, 0xce,
};

#define BYTES_EQ(b, s) assert_true(amqp_bytes_eq((b), (s)))

/* Split @data (after the protocol header) into frames, feeding @chunk bytes
 * at a time (0: all at once). Each frame's type/channel/payload is copied
 * into @frames as one encoded frame. Returns the number of frames. */
static size_t split(const uint8_t *data,
                    size_t len,
                    size_t chunk,
                    struct buf *frames,
                    size_t max)
{
    struct amqp_frame_decoder d;
    size_t n = 0, off = 0;

    amqp_frame_decoder_init(&d, 0);
    while (off < len) {
        size_t give = chunk == 0 || chunk > len - off ? len - off : chunk;
        size_t used = 0, pos = 0;
        while (pos < give) {
            struct amqp_frame f;
            int rv = amqp_frame_decoder_feed(&d, data + off + pos, give - pos,
                                             &used, &f);
            assert_true(rv >= 0);
            pos += used;
            if (rv == 1) {
                assert_true(n < max);
                buf_init(&frames[n]);
                assert_int_equal(amqp_frame_encode(&frames[n], f.type,
                                                   f.channel, f.payload,
                                                   f.size, 0),
                                 0);
                n++;
            }
        }
        off += give;
    }
    amqp_frame_decoder_close(&d);
    return n;
}

static const uint8_t *payload_of(const struct buf *frame, size_t *len)
{
    *len = frame->len - AMQP_FRAME_OVERHEAD;
    return (const uint8_t *)frame->data + AMQP_FRAME_HEADER_SIZE;
}

static void test_protocol_header(void **state)
{
    (void)state;
    assert_int_equal(amqp_frame_check_protocol_header(pika_stream, 8), 0);
    assert_int_equal(amqp_frame_check_protocol_header(pika_stream, 3), 1);
    assert_int_equal(amqp_frame_check_protocol_header("", 0), 1);
    assert_int_equal(amqp_frame_check_protocol_header("GET / HTTP", 10),
                     AMQP_EPROTOCOL_HEADER);
    /* AMQP 0-9 (no revision byte 1) and 0-8 are refused */
    assert_int_equal(amqp_frame_check_protocol_header("AMQP\0\0\x09\x00", 8),
                     AMQP_EPROTOCOL_HEADER);
    assert_int_equal(amqp_frame_check_protocol_header("AMQP\1\1\x08\x00", 5),
                     AMQP_EPROTOCOL_HEADER);
    assert_int_equal(amqp_codec_reply_code(AMQP_EPROTOCOL_HEADER), 0);
}

#define MAXF 32

/* Every frame pika sent: split in any chunking gives the same frames, which
 * re-encode to exactly the captured bytes. */
static void test_pika_stream_frames(void **state)
{
    static const size_t chunks[] = {0, 1, 2, 3, 7, 8, 13, 100};
    const uint8_t *s = pika_stream + 8;
    size_t len = sizeof(pika_stream) - 8;
    size_t c, i;

    (void)state;
    for (c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct buf frames[MAXF];
        struct buf all;
        size_t n = split(s, len, chunks[c], frames, MAXF);

        assert_int_equal(n, 15);
        buf_init(&all);
        for (i = 0; i < n; i++) {
            buf_append(&all, frames[i].data, frames[i].len);
            buf_free(&frames[i]);
        }
        assert_int_equal(all.len, len);
        assert_memory_equal(all.data, s, len);
        buf_free(&all);
    }
}

/* Decode each method/header of the pika stream, check the fields the
 * broker will read, and re-encode byte-identically. */
static void test_pika_stream_methods(void **state)
{
    struct buf frames[MAXF];
    size_t n = split(pika_stream + 8, sizeof(pika_stream) - 8, 0, frames,
                     MAXF);
    uint32_t expect[] = {
        AMQP_CONNECTION_START_OK, AMQP_CONNECTION_TUNE_OK,
        AMQP_CONNECTION_OPEN,     AMQP_CHANNEL_OPEN,
        AMQP_EXCHANGE_DECLARE,    AMQP_QUEUE_DECLARE,
        AMQP_QUEUE_BIND,          AMQP_BASIC_QOS,
        AMQP_BASIC_PUBLISH,       0, /* header */
        0,                        /* body */
        AMQP_BASIC_CONSUME,       AMQP_BASIC_CANCEL,
        AMQP_CHANNEL_CLOSE,       AMQP_CONNECTION_CLOSE,
    };
    size_t i;

    (void)state;
    assert_int_equal(n, 15);
    for (i = 0; i < n; i++) {
        const uint8_t *p;
        size_t plen;
        struct buf re;
        uint8_t type = (uint8_t)frames[i].data[0];

        p = payload_of(&frames[i], &plen);
        buf_init(&re);
        if (type == AMQP_FRAME_METHOD) {
            struct amqp_method m;
            const struct amqp_field *f;
            const struct amqp_table *caps;
            int64_t v;

            assert_int_equal(amqp_method_decode(p, plen, &m), 0);
            assert_int_equal(m.id, expect[i]);
            switch (m.id) {
            case AMQP_CONNECTION_START_OK:
                BYTES_EQ(m.connection_start_ok.mechanism, "PLAIN");
                assert_int_equal(m.connection_start_ok.response.len, 12);
                assert_memory_equal(m.connection_start_ok.response.data,
                                    "\0guest\0guest", 12);
                BYTES_EQ(m.connection_start_ok.locale, "en_US");
                f = amqp_table_get(m.connection_start_ok.client_properties,
                                   "product");
                assert_non_null(f);
                assert_int_equal(f->type, AMQP_FIELD_LONGSTR);
                BYTES_EQ(f->v.bytes, "Pika Python Client Library");
                f = amqp_table_get(m.connection_start_ok.client_properties,
                                   "capabilities");
                assert_non_null(f);
                assert_int_equal(f->type, AMQP_FIELD_TABLE);
                caps = f->v.table;
                f = amqp_table_get(caps, "publisher_confirms");
                assert_non_null(f);
                assert_int_equal(f->type, AMQP_FIELD_BOOL);
                assert_true(f->v.boolean);
                assert_non_null(
                    amqp_table_get(caps, "authentication_failure_close"));
                break;
            case AMQP_CONNECTION_TUNE_OK:
                assert_int_equal(m.connection_tune_ok.channel_max, 2047);
                assert_int_equal(m.connection_tune_ok.frame_max, 131072);
                assert_int_equal(m.connection_tune_ok.heartbeat, 60);
                break;
            case AMQP_CONNECTION_OPEN:
                BYTES_EQ(m.connection_open.virtual_host, "/");
                assert_true(m.connection_open.insist); /* pika sets it */
                break;
            case AMQP_EXCHANGE_DECLARE:
                BYTES_EQ(m.exchange_declare.exchange, "logs");
                BYTES_EQ(m.exchange_declare.type, "topic");
                assert_false(m.exchange_declare.passive);
                assert_true(m.exchange_declare.durable);
                assert_false(m.exchange_declare.auto_delete);
                assert_false(m.exchange_declare.internal);
                assert_false(m.exchange_declare.no_wait);
                f = amqp_table_get(m.exchange_declare.arguments,
                                   "alternate-exchange");
                assert_non_null(f);
                BYTES_EQ(f->v.bytes, "ae");
                break;
            case AMQP_QUEUE_DECLARE:
                BYTES_EQ(m.queue_declare.queue, "");
                assert_false(m.queue_declare.durable);
                assert_true(m.queue_declare.exclusive);
                f = amqp_table_get(m.queue_declare.arguments,
                                   "x-message-ttl");
                assert_non_null(f);
                assert_int_equal(amqp_field_get_int(f, &v), 0);
                assert_int_equal(v, 60000);
                f = amqp_table_get(m.queue_declare.arguments,
                                   "x-dead-letter-exchange");
                assert_int_equal(amqp_field_get_int(f, &v), -1);
                assert_null(amqp_table_get(m.queue_declare.arguments, "no"));
                break;
            case AMQP_QUEUE_BIND:
                BYTES_EQ(m.queue_bind.queue, "amq.gen-AbC");
                BYTES_EQ(m.queue_bind.exchange, "logs");
                BYTES_EQ(m.queue_bind.routing_key, "kern.*");
                assert_int_equal(m.queue_bind.arguments->count, 0);
                break;
            case AMQP_BASIC_QOS:
                assert_int_equal(m.basic_qos.prefetch_count, 1);
                assert_false(m.basic_qos.global);
                break;
            case AMQP_BASIC_PUBLISH:
                BYTES_EQ(m.basic_publish.exchange, "logs");
                BYTES_EQ(m.basic_publish.routing_key, "kern.crit");
                assert_true(m.basic_publish.mandatory);
                assert_false(m.basic_publish.immediate);
                assert_true(m.info->content);
                break;
            case AMQP_BASIC_CONSUME:
                BYTES_EQ(m.basic_consume.queue, "amq.gen-AbC");
                assert_int_equal(m.basic_consume.consumer_tag.len, 38);
                assert_false(m.basic_consume.no_ack);
                break;
            case AMQP_CONNECTION_CLOSE:
                assert_int_equal(m.connection_close.reply_code, 200);
                BYTES_EQ(m.connection_close.reply_text, "Normal shutdown");
                break;
            }
            assert_int_equal(amqp_method_encode_payload(&re, &m), 0);
            amqp_method_free(&m);
        } else if (type == AMQP_FRAME_HEADER) {
            struct amqp_content_header h;
            const struct amqp_basic_properties *pr = &h.props;
            const struct amqp_field *f;

            assert_int_equal(amqp_content_header_decode(p, plen, &h), 0);
            assert_int_equal(h.class_id, AMQP_CLASS_BASIC);
            assert_int_equal(h.body_size, 12);
            assert_int_equal(pr->flags,
                             AMQP_BASIC_CONTENT_TYPE | AMQP_BASIC_HEADERS |
                                 AMQP_BASIC_DELIVERY_MODE |
                                 AMQP_BASIC_CORRELATION_ID |
                                 AMQP_BASIC_REPLY_TO |
                                 AMQP_BASIC_MESSAGE_ID |
                                 AMQP_BASIC_TIMESTAMP | AMQP_BASIC_APP_ID);
            BYTES_EQ(pr->content_type, "text/plain");
            assert_int_equal(pr->delivery_mode, 2);
            BYTES_EQ(pr->reply_to, "amq.rabbitmq.reply-to");
            assert_int_equal(pr->timestamp, 1700000000);
            BYTES_EQ(pr->app_id, "app");
            f = amqp_table_get(pr->headers, "dec");
            assert_int_equal(f->type, AMQP_FIELD_DECIMAL);
            assert_int_equal(f->v.decimal.scale, 2);
            assert_int_equal(f->v.decimal.value, 125);
            f = amqp_table_get(pr->headers, "ts");
            assert_int_equal(f->type, AMQP_FIELD_TIMESTAMP);
            f = amqp_table_get(pr->headers, "raw");
            assert_int_equal(f->type, AMQP_FIELD_BYTES);
            assert_int_equal(f->v.bytes.len, 2);
            f = amqp_table_get(pr->headers, "l");
            assert_int_equal(f->type, AMQP_FIELD_ARRAY);
            assert_int_equal(f->v.array->count, 2);
            assert_int_equal(f->v.array->items[1].type, AMQP_FIELD_LONGSTR);
            f = amqp_table_get(pr->headers, "n");
            assert_int_equal(f->type, AMQP_FIELD_VOID);
            f = amqp_table_get(pr->headers, "big");
            assert_int_equal(f->type, AMQP_FIELD_I64);
            assert_int_equal(f->v.i64, (int64_t)1 << 40);
            assert_int_equal(amqp_content_header_encode_payload(&re, &h), 0);
            amqp_content_header_free(&h);
        } else {
            assert_int_equal(type, AMQP_FRAME_BODY);
            assert_int_equal(plen, 12);
            assert_memory_equal(p, "Hello World!", 12);
            buf_append(&re, p, plen);
        }
        assert_int_equal(re.len, plen);
        assert_memory_equal(re.data, p, plen);
        buf_free(&re);
        buf_free(&frames[i]);
    }
}

/* connection.start as RabbitMQ sends it: decode, re-encode, and build the
 * same frame with the builder API. */
static void test_rabbit_connection_start(void **state)
{
    const uint8_t *p = rabbit_connection_start + AMQP_FRAME_HEADER_SIZE;
    size_t plen = sizeof(rabbit_connection_start) - AMQP_FRAME_OVERHEAD;
    static const char *caps[] = {
        "publisher_confirms",  "exchange_exchange_bindings",
        "basic.nack",          "consumer_cancel_notify",
        "connection.blocked",  "consumer_priorities",
        "authentication_failure_close", "per_consumer_qos",
        "direct_reply_to",
    };
    struct amqp_method m, b;
    struct amqp_table *props, *c;
    struct buf out;
    size_t i;

    (void)state;
    assert_int_equal(amqp_method_decode(p, plen, &m), 0);
    assert_int_equal(m.id, AMQP_CONNECTION_START);
    assert_int_equal(m.connection_start.version_major, 0);
    assert_int_equal(m.connection_start.version_minor, 9);
    BYTES_EQ(m.connection_start.mechanisms, "AMQPLAIN PLAIN");
    BYTES_EQ(m.connection_start.locales, "en_US");
    assert_int_equal(m.connection_start.server_properties->count, 7);
    buf_init(&out);
    assert_int_equal(amqp_method_encode(&out, 0, &m, AMQP_FRAME_MIN_SIZE), 0);
    assert_int_equal(out.len, sizeof(rabbit_connection_start));
    assert_memory_equal(out.data, rabbit_connection_start, out.len);
    amqp_method_free(&m);

    /* the builder */
    props = amqp_table_new();
    c = amqp_table_add_table(props, "capabilities");
    for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        amqp_table_add_bool(c, caps[i], 1);
    }
    amqp_table_add_longstr(props, "cluster_name", "rabbit@localhost");
    amqp_table_add_longstr(
        props, "copyright",
        "Copyright (c) 2007-2022 VMware, Inc. or its affiliates.");
    amqp_table_add_longstr(
        props, "information",
        "Licensed under the MPL 2.0. Website: https://rabbitmq.com");
    amqp_table_add_longstr(props, "platform", "Erlang/OTP 25.2.3");
    amqp_table_add_longstr(props, "product", "RabbitMQ");
    amqp_table_add_longstr(props, "version", "3.10.8");
    amqp_method_init(&b, AMQP_CONNECTION_START);
    b.connection_start.version_minor = 9;
    b.connection_start.server_properties = props;
    b.connection_start.mechanisms = amqp_cstr("AMQPLAIN PLAIN");
    b.connection_start.locales = amqp_cstr("en_US");
    buf_reset(&out);
    assert_int_equal(amqp_method_encode(&out, 0, &b, 0), 0);
    assert_int_equal(out.len, sizeof(rabbit_connection_start));
    assert_memory_equal(out.data, rabbit_connection_start, out.len);
    /* too big for a 500-byte frame_max: nothing appended */
    buf_reset(&out);
    assert_int_equal(amqp_method_encode(&out, 0, &b, 500),
                     AMQP_EFRAME_TOO_BIG);
    assert_int_equal(out.len, 0);
    amqp_table_free(props);
    buf_free(&out);
}

/* Fill every argument of @m with a value derived from its position. The
 * strings live in @store. */
static void fill_args(struct amqp_method *m,
                      struct amqp_table *table,
                      char store[][16],
                      unsigned salt)
{
    const struct amqp_method_info *info = m->info;
    size_t i;

    for (i = 0; i < info->nargs; i++) {
        const struct amqp_arg_info *a = &info->args[i];
        void *f = (char *)m + a->offset;
        unsigned k = (unsigned)i + salt;

        switch (a->type) {
        case AMQP_ARG_OCTET:
            *(uint8_t *)f = (uint8_t)(0x80 + k);
            break;
        case AMQP_ARG_SHORT:
            *(uint16_t *)f = (uint16_t)(0x8100 + k);
            break;
        case AMQP_ARG_LONG:
            *(uint32_t *)f = 0x82000000u + k;
            break;
        case AMQP_ARG_LONGLONG:
        case AMQP_ARG_TIMESTAMP:
            *(uint64_t *)f = 0x8300000000000000ull + k;
            break;
        case AMQP_ARG_SHORTSTR:
        case AMQP_ARG_LONGSTR:
            snprintf(store[i], sizeof(store[i]), "a%u-%zu", salt, i);
            *(struct amqp_bytes *)f = amqp_cstr(store[i]);
            break;
        case AMQP_ARG_BIT:
            *(bool *)f = ((k * 7 + salt) % 3) != 0;
            break;
        case AMQP_ARG_TABLE:
            *(struct amqp_table **)f = table;
            break;
        }
    }
}

/* Compare the arguments of two methods of the same id. */
static void assert_args_equal(const struct amqp_method *x,
                              const struct amqp_method *y)
{
    const struct amqp_method_info *info = x->info;
    size_t i;

    assert_int_equal(x->id, y->id);
    for (i = 0; i < info->nargs; i++) {
        const struct amqp_arg_info *a = &info->args[i];
        const void *f = (const char *)x + a->offset;
        const void *g = (const char *)y + a->offset;
        struct buf tf, tg;

        switch (a->type) {
        case AMQP_ARG_OCTET:
            assert_int_equal(*(const uint8_t *)f, *(const uint8_t *)g);
            break;
        case AMQP_ARG_SHORT:
            assert_int_equal(*(const uint16_t *)f, *(const uint16_t *)g);
            break;
        case AMQP_ARG_LONG:
            assert_int_equal(*(const uint32_t *)f, *(const uint32_t *)g);
            break;
        case AMQP_ARG_LONGLONG:
        case AMQP_ARG_TIMESTAMP:
            assert_true(*(const uint64_t *)f == *(const uint64_t *)g);
            break;
        case AMQP_ARG_SHORTSTR:
        case AMQP_ARG_LONGSTR: {
            const struct amqp_bytes *bf = f, *bg = g;
            assert_int_equal(bf->len, bg->len);
            assert_memory_equal(bf->data, bg->data, bf->len);
            break;
        }
        case AMQP_ARG_BIT:
            assert_int_equal(*(const bool *)f, *(const bool *)g);
            break;
        case AMQP_ARG_TABLE:
            buf_init(&tf);
            buf_init(&tg);
            amqp_table_encode(&tf, *(struct amqp_table *const *)f);
            amqp_table_encode(&tg, *(struct amqp_table *const *)g);
            assert_int_equal(tf.len, tg.len);
            assert_memory_equal(tf.data, tg.data, tf.len);
            buf_free(&tf);
            buf_free(&tg);
            break;
        }
    }
}

/* Every method of the table: encode, decode, same fields, same bytes; every
 * truncation fails cleanly; a trailing byte fails. */
static void test_every_method_roundtrip(void **state)
{
    const struct amqp_method_info *tab;
    struct amqp_table *args = amqp_table_new();
    size_t n, i, cut;
    unsigned salt;

    (void)state;
    amqp_table_add_i32(args, "x-message-ttl", 1000);
    tab = amqp_method_table(&n);
    assert_int_equal(n, 62);
    for (i = 0; i < n; i++) {
        if (i > 0) {
            assert_true(tab[i - 1].id < tab[i].id); /* sorted, no dups */
        }
        assert_ptr_equal(amqp_method_lookup(tab[i].id), &tab[i]);
        for (salt = 0; salt < 3; salt++) {
            char store[16][16];
            struct amqp_method m, d;
            struct buf out, re;

            amqp_method_init(&m, tab[i].id);
            fill_args(&m, args, store, salt);
            buf_init(&out);
            buf_init(&re);
            assert_int_equal(amqp_method_encode_payload(&out, &m), 0);
            assert_int_equal(amqp_method_decode(out.data, out.len, &d), 0);
            assert_args_equal(&m, &d);
            assert_int_equal(amqp_method_encode_payload(&re, &d), 0);
            assert_int_equal(re.len, out.len);
            assert_memory_equal(re.data, out.data, out.len);
            amqp_method_free(&d);
            for (cut = 0; cut < out.len; cut++) {
                assert_int_equal(amqp_method_decode(out.data, cut, &d),
                                 AMQP_ESYNTAX);
            }
            buf_append(&out, "", 1);
            assert_int_equal(amqp_method_decode(out.data, out.len, &d),
                             AMQP_ESYNTAX);
            buf_free(&out);
            buf_free(&re);
        }
    }
    amqp_table_free(args);
}

static void test_bit_packing(void **state)
{
    struct amqp_method m, d;
    struct buf out;
    const uint8_t *p;

    (void)state;
    buf_init(&out);
    /* queue.declare: ticket, queue, then five bits in one octet */
    amqp_method_init(&m, AMQP_QUEUE_DECLARE);
    m.queue_declare.queue = amqp_cstr("q");
    m.queue_declare.durable = true;     /* bit 1 */
    m.queue_declare.exclusive = true;   /* bit 2 */
    m.queue_declare.no_wait = true;     /* bit 4 */
    assert_int_equal(amqp_method_encode_payload(&out, &m), 0);
    p = (const uint8_t *)out.data;
    /* 00 32 00 0a | 00 00 | 01 'q' | bits | 00 00 00 00 */
    assert_int_equal(out.len, 4 + 2 + 2 + 1 + 4);
    assert_int_equal(p[8], 0x16);
    assert_int_equal(p[9] | p[10] | p[11] | p[12], 0);

    /* basic.deliver: a bit between two other arguments has its own octet */
    buf_reset(&out);
    amqp_method_init(&m, AMQP_BASIC_DELIVER);
    m.basic_deliver.consumer_tag = amqp_cstr("t");
    m.basic_deliver.delivery_tag = 7;
    m.basic_deliver.redelivered = true;
    m.basic_deliver.exchange = amqp_cstr("");
    m.basic_deliver.routing_key = amqp_cstr("rk");
    assert_int_equal(amqp_method_encode_payload(&out, &m), 0);
    assert_int_equal(out.len, 4 + 2 + 8 + 1 + 1 + 3);
    p = (const uint8_t *)out.data;
    assert_int_equal(p[14], 0x01);

    /* basic.nack: multiple=bit 0, requeue=bit 1; unused bits ignored */
    buf_reset(&out);
    buf_append(&out, "\x00\x3c\x00\x78\0\0\0\0\0\0\0\x05\xfe", 13);
    assert_int_equal(amqp_method_decode(out.data, out.len, &d), 0);
    assert_int_equal(d.basic_nack.delivery_tag, 5);
    assert_false(d.basic_nack.multiple);
    assert_true(d.basic_nack.requeue);
    amqp_method_free(&d);

    /* exchange.declare: five bits, all set */
    buf_reset(&out);
    amqp_method_init(&m, AMQP_EXCHANGE_DECLARE);
    m.exchange_declare.passive = m.exchange_declare.durable = true;
    m.exchange_declare.auto_delete = m.exchange_declare.internal = true;
    m.exchange_declare.no_wait = true;
    assert_int_equal(amqp_method_encode_payload(&out, &m), 0);
    assert_int_equal(out.len, 4 + 2 + 1 + 1 + 1 + 4);
    assert_int_equal((uint8_t)out.data[8], 0x1f);
    buf_free(&out);
}

static void test_unknown_method(void **state)
{
    struct amqp_method m;
    struct buf out;

    (void)state;
    /* basic.recover-sync (60,102) was dropped in 0-9-1 */
    assert_int_equal(amqp_method_decode("\x00\x3c\x00\x66\x01", 5, &m),
                     AMQP_EUNKNOWN_METHOD);
    assert_int_equal(amqp_method_decode("\x00\x0b\x00\x0a", 4, &m),
                     AMQP_EUNKNOWN_METHOD);
    assert_int_equal(amqp_codec_reply_code(AMQP_EUNKNOWN_METHOD), 540);
    assert_int_equal(amqp_method_decode("\x00\x0a", 2, &m), AMQP_ESYNTAX);
    assert_string_equal(amqp_method_name(AMQP_EXCHANGE_UNBIND_OK),
                        "exchange.unbind-ok");
    assert_string_equal(amqp_method_name(12345), "unknown");
    amqp_method_init(&m, AMQP_METHOD_ID(99, 1));
    buf_init(&out);
    assert_int_equal(amqp_method_encode_payload(&out, &m),
                     AMQP_EUNKNOWN_METHOD);
    assert_int_equal(out.len, 0);
    /* shortstr over 255 bytes: encode refuses, nothing appended */
    {
        char big[300];
        memset(big, 'q', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        amqp_method_init(&m, AMQP_QUEUE_DELETE);
        m.queue_delete.queue = amqp_cstr(big);
        assert_int_equal(amqp_method_encode(&out, 1, &m, 0), AMQP_ETOO_LONG);
        assert_int_equal(out.len, 0);
    }
    buf_free(&out);
}

/* A table with every field type, built, encoded, decoded, re-encoded. */
static struct amqp_table *every_type_table(void)
{
    struct amqp_table *t = amqp_table_new();
    struct amqp_table *sub;
    struct amqp_array *arr;
    struct amqp_field *f;

    amqp_table_add(t, "bool", AMQP_FIELD_BOOL)->v.boolean = 1;
    amqp_table_add(t, "i8", AMQP_FIELD_I8)->v.i8 = -5;
    amqp_table_add(t, "u8", AMQP_FIELD_U8)->v.u8 = 250;
    amqp_table_add(t, "i16", AMQP_FIELD_I16)->v.i16 = -300;
    amqp_table_add(t, "u16", AMQP_FIELD_U16)->v.u16 = 65000;
    amqp_table_add(t, "i32", AMQP_FIELD_I32)->v.i32 = -70000;
    amqp_table_add(t, "u32", AMQP_FIELD_U32)->v.u32 = 4000000000u;
    amqp_table_add(t, "i64", AMQP_FIELD_I64)->v.i64 = -((int64_t)1 << 40);
    amqp_table_add(t, "f", AMQP_FIELD_FLOAT)->v.f = 1.5f;
    amqp_table_add(t, "d", AMQP_FIELD_DOUBLE)->v.d = -2.25;
    f = amqp_table_add(t, "dec", AMQP_FIELD_DECIMAL);
    f->v.decimal.scale = 3;
    f->v.decimal.value = 12345;
    amqp_table_add_longstr(t, "S", "long string");
    amqp_table_add(t, "T", AMQP_FIELD_TIMESTAMP)->v.timestamp = 1700000000;
    amqp_table_add(t, "V", AMQP_FIELD_VOID);
    f = amqp_table_add(t, "x", AMQP_FIELD_BYTES);
    f->v.bytes = amqp_table_copy_bytes(t, "\0\1\2", 3);
    sub = amqp_table_add_table(t, "F");
    amqp_table_add_i64(sub, "n", 42);
    arr = amqp_table_add_array(t, "A");
    amqp_array_add(arr, AMQP_FIELD_I32)->v.i32 = 1;
    amqp_array_add(arr, AMQP_FIELD_VOID);
    amqp_table_add_longstr(amqp_array_add(arr, AMQP_FIELD_TABLE)->v.table,
                           "k", "v");
    amqp_array_add(amqp_array_add(arr, AMQP_FIELD_ARRAY)->v.array,
                   AMQP_FIELD_BOOL);
    amqp_table_add_bool(t, "bool", 0); /* duplicate key: kept */
    return t;
}

static void test_table_every_type(void **state)
{
    struct amqp_table *t = every_type_table(), *d;
    struct amqp_reader r;
    struct buf out, re;
    const struct amqp_field *f;
    int64_t v;
    size_t cut;

    (void)state;
    buf_init(&out);
    buf_init(&re);
    assert_int_equal(amqp_table_encode(&out, t), 0);
    amqp_reader_init(&r, out.data, out.len);
    assert_int_equal(amqp_table_decode(&r, 0, &d), 0);
    assert_int_equal(r.pos, out.len);
    assert_int_equal(d->count, 18);
    assert_int_equal(amqp_table_encode(&re, d), 0);
    assert_int_equal(re.len, out.len);
    assert_memory_equal(re.data, out.data, out.len);

    f = amqp_table_get(d, "bool"); /* first of the duplicates */
    assert_int_equal(f->v.boolean, 1);
    assert_int_equal(amqp_table_get(d, "i8")->v.i8, -5);
    assert_int_equal(amqp_table_get(d, "u8")->v.u8, 250);
    assert_int_equal(amqp_table_get(d, "i16")->v.i16, -300);
    assert_int_equal(amqp_table_get(d, "u16")->v.u16, 65000);
    assert_int_equal(amqp_table_get(d, "i32")->v.i32, -70000);
    assert_int_equal(amqp_table_get(d, "u32")->v.u32, 4000000000u);
    assert_true(amqp_table_get(d, "f")->v.f == 1.5f);
    assert_true(amqp_table_get(d, "d")->v.d == -2.25);
    assert_int_equal(amqp_table_get(d, "dec")->v.decimal.value, 12345);
    BYTES_EQ(amqp_table_get(d, "S")->v.bytes, "long string");
    assert_int_equal(amqp_table_get(d, "x")->v.bytes.len, 3);
    assert_int_equal(amqp_table_get(d, "V")->type, AMQP_FIELD_VOID);
    assert_int_equal(
        amqp_table_get(amqp_table_get(d, "F")->v.table, "n")->v.i64, 42);
    assert_int_equal(amqp_table_get(d, "A")->v.array->count, 4);
    assert_int_equal(amqp_field_get_int(amqp_table_get(d, "i64"), &v), 0);
    assert_true(v == -((int64_t)1 << 40));
    assert_int_equal(amqp_field_get_int(amqp_table_get(d, "u32"), &v), 0);
    assert_true(v == 4000000000);
    amqp_table_free(d);

    /* the wire form of a few values, from the errata */
    buf_reset(&re);
    {
        struct amqp_table *s = amqp_table_new();
        amqp_table_add(s, "a", AMQP_FIELD_I16)->v.i16 = -2;
        amqp_table_add(s, "b", AMQP_FIELD_I64)->v.i64 = 1;
        assert_int_equal(amqp_table_encode(&re, s), 0);
        assert_int_equal(re.len, 4 + 3 + 2 + 3 + 8);
        assert_memory_equal(re.data,
                            "\0\0\0\x10\x01" "as\xff\xfe\x01" "bl\0\0\0\0\0\0\0\x01",
                            re.len);
        amqp_table_free(s);
    }

    /* every truncation of the count or the content fails cleanly */
    for (cut = 0; cut < out.len; cut++) {
        amqp_reader_init(&r, out.data, cut);
        assert_int_equal(amqp_table_decode(&r, 0, &d), AMQP_ESYNTAX);
        assert_null(d);
        assert_int_equal(r.pos, 0);
    }
    /* ...and so does a count that cuts a value inside the table */
    for (cut = 0; cut + 4 < out.len; cut++) {
        int rv;
        buf_reset(&re);
        amqp_put_u32(&re, (uint32_t)cut);
        buf_append(&re, out.data + 4, cut);
        amqp_reader_init(&r, re.data, re.len);
        rv = amqp_table_decode(&r, 0, &d);
        if (rv == 0) { /* cut fell on an entry boundary */
            amqp_table_free(d);
        } else {
            assert_int_equal(rv, AMQP_ESYNTAX);
        }
    }
    amqp_table_free(t);
    buf_free(&out);
    buf_free(&re);
}

static void test_table_bad(void **state)
{
    struct amqp_table *d;
    struct amqp_method m;

    (void)state;
    /* spec-only types RabbitMQ does not accept: 'U' short, 'L' long-long */
    assert_int_equal(amqp_table_decode_entries("\x01kU\0\0", 5, 0, &d),
                     AMQP_ETABLE_TYPE);
    assert_int_equal(amqp_table_decode_entries("\x01kL\0\0\0\0\0\0\0\0", 11,
                                               0, &d),
                     AMQP_ETABLE_TYPE);
    assert_int_equal(amqp_table_decode_entries("\x01kA\0\0\0\x01Z", 9, 0, &d),
                     AMQP_ETABLE_TYPE);
    assert_int_equal(amqp_codec_reply_code(AMQP_ETABLE_TYPE), 502);
    /* a key without its type octet */
    assert_int_equal(amqp_table_decode_entries("\x01k", 2, 0, &d),
                     AMQP_ESYNTAX);
    /* bool octet 2 is true and re-encodes as 2 */
    assert_int_equal(amqp_table_decode_entries("\x01kt\x02", 4, 0, &d), 0);
    assert_int_equal(amqp_table_get(d, "k")->v.boolean, 2);
    amqp_table_free(d);
    /* a bad table inside queue.declare's arguments: the method fails and
     * nothing leaks (ASan) */
    assert_int_equal(
        amqp_method_decode("\x00\x32\x00\x0a\0\0\x01q\x00"
                           "\0\0\0\x0b\x01" "aS\0\0\0\0" "\x01" "bU",
                           24, &m),
        AMQP_ETABLE_TYPE);
}

/* Nest @depth tables ('F') inside each other and decode with @max. */
static int decode_nested(unsigned depth, unsigned max, uint8_t type)
{
    struct buf b;
    struct amqp_table *t;
    struct amqp_reader r;
    unsigned i;
    int rv;

    /* innermost first: an empty table */
    buf_init(&b);
    amqp_put_u32(&b, 0);
    for (i = 1; i < depth; i++) {
        struct buf n;
        buf_init(&n);
        if (type == 'F') {
            amqp_put_u32(&n, (uint32_t)(b.len + 3));
            buf_append(&n, "\x01kF", 3);
        } else { /* an array holding the next level */
            amqp_put_u32(&n, (uint32_t)(b.len + 3 + 4 + 1));
            buf_append(&n, "\x01kA", 3);
            amqp_put_u32(&n, (uint32_t)(b.len + 1));
            buf_append(&n, "F", 1);
            i++; /* the array is a level too */
        }
        buf_append(&n, b.data, b.len);
        buf_free(&b);
        b = n;
    }
    amqp_reader_init(&r, b.data, b.len);
    rv = amqp_table_decode(&r, max, &t);
    if (rv == 0) {
        struct buf re;
        buf_init(&re);
        assert_int_equal(amqp_table_encode(&re, t), 0);
        assert_int_equal(re.len, b.len);
        assert_memory_equal(re.data, b.data, b.len);
        buf_free(&re);
        amqp_table_free(t);
    }
    buf_free(&b);
    return rv;
}

static void test_table_depth(void **state)
{
    (void)state;
    assert_int_equal(decode_nested(1, 0, 'F'), 0);
    assert_int_equal(decode_nested(AMQP_TABLE_DEPTH_DEFAULT, 0, 'F'), 0);
    assert_int_equal(decode_nested(AMQP_TABLE_DEPTH_DEFAULT + 1, 0, 'F'),
                     AMQP_ETABLE_DEPTH);
    assert_int_equal(decode_nested(5, 5, 'F'), 0);
    assert_int_equal(decode_nested(6, 5, 'F'), AMQP_ETABLE_DEPTH);
    assert_int_equal(decode_nested(2000, 0, 'F'), AMQP_ETABLE_DEPTH);
    assert_int_equal(decode_nested(AMQP_TABLE_DEPTH_DEFAULT + 1, 0, 'A'),
                     AMQP_ETABLE_DEPTH);
    assert_int_equal(decode_nested(9, 9, 'A'), 0);
}

/* Many entries: arena growth, one free. */
static void test_table_big(void **state)
{
    struct amqp_table *t = amqp_table_new(), *d;
    struct amqp_array *a = amqp_table_add_array(t, "arr");
    struct buf out, re;
    char key[32];
    int i;

    (void)state;
    for (i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        amqp_table_add_i32(t, key, i);
        amqp_array_add(a, AMQP_FIELD_VOID);
    }
    {
        static char blob[100000];
        struct amqp_field *f = amqp_table_add(t, "blob", AMQP_FIELD_BYTES);
        f->v.bytes = amqp_table_copy_bytes(t, blob, sizeof(blob));
    }
    buf_init(&out);
    buf_init(&re);
    assert_int_equal(amqp_table_encode(&out, t), 0);
    assert_int_equal(amqp_table_decode_entries(out.data + 4, out.len - 4, 0,
                                               &d),
                     0);
    assert_int_equal(d->count, 5002);
    assert_int_equal(amqp_table_get(d, "key-4999")->v.i32, 4999);
    assert_int_equal(amqp_table_encode(&re, d), 0);
    assert_int_equal(re.len, out.len);
    assert_memory_equal(re.data, out.data, out.len);
    amqp_table_free(d);
    amqp_table_free(t);
    buf_free(&out);
    buf_free(&re);
}

static void test_content_header(void **state)
{
    struct amqp_content_header h, d;
    struct buf out, re;
    size_t cut;

    (void)state;
    memset(&h, 0, sizeof(h));
    h.class_id = AMQP_CLASS_BASIC;
    h.body_size = 1ull << 33;
    h.props.flags = AMQP_BASIC_FLAGS_ALL;
    h.props.content_type = amqp_cstr("application/json");
    h.props.content_encoding = amqp_cstr("gzip");
    h.props.headers = every_type_table();
    h.props.delivery_mode = 2;
    h.props.priority = 9;
    h.props.correlation_id = amqp_cstr("corr");
    h.props.reply_to = amqp_cstr("rq");
    h.props.expiration = amqp_cstr("60000");
    h.props.message_id = amqp_cstr("mid");
    h.props.timestamp = 1;
    h.props.type = amqp_cstr("t");
    h.props.user_id = amqp_cstr("guest");
    h.props.app_id = amqp_cstr("app");
    h.props.cluster_id = amqp_cstr("c");
    buf_init(&out);
    buf_init(&re);
    assert_int_equal(amqp_content_header_encode(&out, 3, &h, 0), 0);
    assert_int_equal((uint8_t)out.data[0], AMQP_FRAME_HEADER);
    assert_int_equal(amqp_content_header_decode(
                         out.data + AMQP_FRAME_HEADER_SIZE,
                         out.len - AMQP_FRAME_OVERHEAD, &d),
                     0);
    assert_true(d.body_size == 1ull << 33);
    BYTES_EQ(d.props.expiration, "60000");
    BYTES_EQ(d.props.cluster_id, "c");
    assert_int_equal(d.props.priority, 9);
    assert_int_equal(d.props.headers->count, 18);
    assert_int_equal(amqp_content_header_encode(&re, 3, &d, 0), 0);
    assert_int_equal(re.len, out.len);
    assert_memory_equal(re.data, out.data, out.len);
    amqp_content_header_free(&d);
    for (cut = 0; cut < out.len - AMQP_FRAME_OVERHEAD; cut++) {
        assert_int_equal(amqp_content_header_decode(
                             out.data + AMQP_FRAME_HEADER_SIZE, cut, &d),
                         AMQP_ESYNTAX);
    }
    amqp_table_free(h.props.headers);

    /* no properties at all: 14 bytes */
    buf_reset(&out);
    memset(&h, 0, sizeof(h));
    h.class_id = AMQP_CLASS_BASIC;
    assert_int_equal(amqp_content_header_encode_payload(&out, &h), 0);
    assert_int_equal(out.len, 14);
    assert_int_equal(amqp_content_header_decode(out.data, 14, &d), 0);
    /* continuation / unused flag bits, other classes, trailing bytes */
    out.data[13] = 1;
    assert_int_equal(amqp_content_header_decode(out.data, 14, &d),
                     AMQP_ESYNTAX);
    out.data[13] = 2;
    assert_int_equal(amqp_content_header_decode(out.data, 14, &d),
                     AMQP_ESYNTAX);
    out.data[13] = 0;
    out.data[1] = 50;
    assert_int_equal(amqp_content_header_decode(out.data, 14, &d),
                     AMQP_ESYNTAX);
    out.data[1] = 60;
    buf_append(&out, "", 1);
    assert_int_equal(amqp_content_header_decode(out.data, 15, &d),
                     AMQP_ESYNTAX);
    h.props.flags = 1;
    assert_int_equal(amqp_content_header_encode_payload(&re, &h),
                     AMQP_ETOO_LONG);
    buf_free(&out);
    buf_free(&re);
}

/* Feed @data in one call to a fresh decoder with @max; return the result
 * of the call that ends the input. */
static int feed_all(const void *data, size_t len, size_t max,
                    struct amqp_frame *f)
{
    struct amqp_frame_decoder d;
    size_t used;
    int rv;

    amqp_frame_decoder_init(&d, max);
    rv = amqp_frame_decoder_feed(&d, data, len, &used, f);
    if (rv < 0) {
        /* sticky */
        size_t u2;
        assert_int_equal(amqp_frame_decoder_feed(&d, "x", 1, &u2, f), rv);
        assert_int_equal(u2, 0);
    }
    amqp_frame_decoder_close(&d);
    return rv;
}

static void test_frame_errors(void **state)
{
    struct amqp_frame f;
    struct buf b;

    (void)state;
    /* heartbeat */
    assert_int_equal(feed_all("\x08\0\0\0\0\0\0\xce", 8, 0, &f), 1);
    assert_int_equal(f.type, AMQP_FRAME_HEARTBEAT);
    assert_int_equal(f.size, 0);
    assert_int_equal(feed_all("\x08\0\x01\0\0\0\0\xce", 8, 0, &f),
                     AMQP_EFRAME_HEARTBEAT);
    assert_int_equal(feed_all("\x08\0\0\0\0\0\x01x\xce", 9, 0, &f),
                     AMQP_EFRAME_HEARTBEAT);
    /* bad end octet, in one feed and in two */
    assert_int_equal(feed_all("\x03\0\x01\0\0\0\x01x\xcf", 9, 0, &f),
                     AMQP_EFRAME_END);
    {
        struct amqp_frame_decoder d;
        size_t used;
        amqp_frame_decoder_init(&d, 0);
        assert_int_equal(amqp_frame_decoder_feed(&d, "\x03\0\x01\0\0\0\x02xy",
                                                 9, &used, &f),
                         0);
        assert_int_equal(amqp_frame_decoder_feed(&d, "\0", 1, &used, &f),
                         AMQP_EFRAME_END);
        amqp_frame_decoder_close(&d);
    }
    /* unknown types: 0, 4 (spec's old OOB types), 9, 0xCE */
    assert_int_equal(feed_all("\x04\0\x01\0\0\0\0\xce", 8, 0, &f),
                     AMQP_EFRAME_TYPE);
    assert_int_equal(feed_all("\x00\0\x01\0\0\0\0\xce", 8, 0, &f),
                     AMQP_EFRAME_TYPE);
    assert_int_equal(feed_all("\xce\0\x01\0\0\0\0\xce", 8, 0, &f),
                     AMQP_EFRAME_TYPE);
    /* the type error is seen on the header, before any payload */
    assert_int_equal(feed_all("\x09\0\x01\xff\xff\xff\xff", 7, 0, &f),
                     AMQP_EFRAME_TYPE);
    /* oversize: refused from the header alone */
    assert_int_equal(feed_all("\x03\0\x01\0\x02\0\x00", 7, 0, &f),
                     AMQP_EFRAME_TOO_BIG); /* 131072 + 8 > 131072 */
    assert_int_equal(feed_all("\x01\0\x01\xff\xff\xff\xff", 7, 0, &f),
                     AMQP_EFRAME_TOO_BIG);
    assert_int_equal(feed_all("\x03\0\x01\0\0\x0f\xf9", 7, 4096, &f),
                     AMQP_EFRAME_TOO_BIG); /* 4089 + 8 */
    assert_int_equal(feed_all("\x03\0\x01\0\0\x0f\xf8", 7, 4096, &f), 0);
    assert_int_equal(amqp_codec_reply_code(AMQP_EFRAME_TOO_BIG), 501);
    assert_int_equal(amqp_codec_reply_code(AMQP_EFRAME_END), 501);
    assert_int_equal(amqp_codec_reply_code(AMQP_EFRAME_TYPE), 501);
    assert_int_equal(amqp_codec_reply_code(AMQP_ESYNTAX), 502);
    assert_string_equal(amqp_codec_strerror(AMQP_EFRAME_END),
                        "bad frame-end octet");

    /* exactly frame_max is fine; the bound moves with set_max */
    buf_init(&b);
    {
        static uint8_t payload[4088];
        struct amqp_frame_decoder d;
        size_t used;
        assert_int_equal(amqp_frame_encode(&b, AMQP_FRAME_BODY, 1, payload,
                                           sizeof(payload), 4096),
                         0);
        assert_int_equal(b.len, 4096);
        assert_int_equal(amqp_frame_encode(&b, AMQP_FRAME_BODY, 1, payload,
                                           sizeof(payload) + 1, 4096),
                         AMQP_EFRAME_TOO_BIG);
        assert_int_equal(b.len, 4096);
        assert_int_equal(feed_all(b.data, b.len, 4096, &f), 1);
        assert_int_equal(f.size, 4088);
        assert_int_equal(feed_all(b.data, b.len, 4095, &f),
                         AMQP_EFRAME_TOO_BIG);
        amqp_frame_decoder_init(&d, 4095);
        amqp_frame_decoder_set_max(&d, 4096);
        assert_int_equal(amqp_frame_decoder_feed(&d, b.data, b.len, &used,
                                                 &f),
                         1);
        assert_int_equal(used, 4096);
        amqp_frame_decoder_close(&d);
    }
    buf_free(&b);
}

static void test_body_split(void **state)
{
    static uint8_t body[10000];
    struct buf out, frames[8];
    size_t i, n, total = 0;

    (void)state;
    for (i = 0; i < sizeof(body); i++) {
        body[i] = (uint8_t)(i * 31);
    }
    buf_init(&out);
    amqp_frame_encode_body(&out, 5, body, sizeof(body), 4096);
    n = split((const uint8_t *)out.data, out.len, 0, frames, 8);
    assert_int_equal(n, 3); /* 4088 + 4088 + 1824 */
    for (i = 0; i < n; i++) {
        size_t plen;
        const uint8_t *p = payload_of(&frames[i], &plen);
        assert_int_equal((uint8_t)frames[i].data[0], AMQP_FRAME_BODY);
        assert_int_equal((uint8_t)frames[i].data[2], 5);
        assert_true(frames[i].len <= 4096);
        assert_memory_equal(p, body + total, plen);
        total += plen;
        buf_free(&frames[i]);
    }
    assert_int_equal(total, sizeof(body));
    buf_reset(&out);
    amqp_frame_encode_body(&out, 5, body, 0, 4096);
    assert_int_equal(out.len, 0);
    amqp_frame_encode_heartbeat(&out);
    assert_int_equal(out.len, 8);
    assert_memory_equal(out.data, "\x08\0\0\0\0\0\0\xce", 8);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocol_header),
        cmocka_unit_test(test_pika_stream_frames),
        cmocka_unit_test(test_pika_stream_methods),
        cmocka_unit_test(test_rabbit_connection_start),
        cmocka_unit_test(test_every_method_roundtrip),
        cmocka_unit_test(test_bit_packing),
        cmocka_unit_test(test_unknown_method),
        cmocka_unit_test(test_table_every_type),
        cmocka_unit_test(test_table_bad),
        cmocka_unit_test(test_table_depth),
        cmocka_unit_test(test_table_big),
        cmocka_unit_test(test_content_header),
        cmocka_unit_test(test_frame_errors),
        cmocka_unit_test(test_body_split),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
