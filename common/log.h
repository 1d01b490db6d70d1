/*
 * log: levelled, line-at-a-time logging to stderr.
 *
 * Every line carries a UTC timestamp, the level and the process tag set by
 * log_init(). Not thread-safe beyond what stdio gives; ringmq is one loop per
 * process, so that is enough.
 */
#ifndef RINGMQ_LOG_H
#define RINGMQ_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* @tag is copied. Lines below @level are dropped. */
void log_init(const char *tag, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* "debug", "info", "warn", "error" -> level. 0, or -1 for another name. */
int log_level_parse(const char *name, enum log_level *out);

void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
