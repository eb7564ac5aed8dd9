/* One-line, timestamped log records on stderr, prefixed with the process role
 * and pid, so the interleaved output of master, frontends and workers can be
 * told apart (and so journald gets one record per line). As text (the
 * default) or as one JSON object per line for log pipelines (Loki, an ELK
 * stack): {"time","level","role","pid","node","message"}. */
#ifndef TXP_LOG_H
#define TXP_LOG_H

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Sets the role shown in every record ("master", "frontend-0", "worker-1"). */
void log_set_role(const char *role);
void log_set_level(enum log_level level);
/* Parses "debug|info|warn|error"; returns -1 for anything else. */
int log_parse_level(const char *name, enum log_level *out);
void log_set_format(enum log_format format);
/* Parses "text|json"; returns -1 for anything else. */
int log_parse_format(const char *name, enum log_format *out);
/* The node number shown in JSON records (0: none, shown as null). */
void log_set_node(unsigned node);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
