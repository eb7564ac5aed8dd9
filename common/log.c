/* Logging for every process: formats a whole record into one buffer and writes
 * it with a single write(2), so records from concurrent processes sharing the
 * same stderr never interleave mid-line. A JSON record escapes the message
 * (quotes, backslashes, control bytes) and replaces bytes that are not UTF-8
 * with U+FFFD, so every line parses whatever a message quotes. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_MESSAGE_MAX 1024
/* Worst case of an escaped message: \u00XX for each byte. */
#define LOG_LINE_MAX (LOG_MESSAGE_MAX * 6 + 256)

static char log_role[32] = "txprocd";
static enum log_level log_min_level = LOG_LEVEL_INFO;
static enum log_format log_format = LOG_FORMAT_TEXT;
static unsigned log_node;

void log_set_role(const char *role)
{
    snprintf(log_role, sizeof log_role, "%s", role);
}

void log_set_level(enum log_level level)
{
    log_min_level = level;
}

int log_parse_level(const char *name, enum log_level *out)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_format(enum log_format format)
{
    log_format = format;
}

int log_parse_format(const char *name, enum log_format *out)
{
    if (strcmp(name, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (strcmp(name, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

void log_set_node(unsigned node)
{
    log_node = node;
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned min;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2, min = 0x80;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3, min = 0x800;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    unsigned cp = s[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* s (n bytes) as the inside of a JSON string into out (room for 6 bytes per
 * input byte); returns the length written. */
static size_t json_escape(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char ch = u[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
            i++;
        } else if (ch < 0x20 || ch == 0x7f) {
            o += (size_t)sprintf(out + o, "\\u00%c%c", hex[ch >> 4], hex[ch & 15]);
            i++;
        } else if (ch < 0x80) {
            out[o++] = (char)ch;
            i++;
        } else {
            size_t len = utf8_len(u + i, n - i);
            if (len == 0) {
                memcpy(out + o, "\\ufffd", 6);
                o += 6;
                i++;
            } else {
                memcpy(out + o, s + i, len);
                o += len;
                i += len;
            }
        }
    }
    return o;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const tags[] = { "debug", "info", "WARN", "ERROR" };
    if (level < log_min_level)
        return;

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[96]; /* 24 used; room for what the compiler cannot rule out */
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));

    char message[LOG_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int body = vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (body < 0)
        return;
    size_t mlen = (size_t)body < sizeof message ? (size_t)body : sizeof message - 1;

    char line[LOG_LINE_MAX];
    int len;
    if (log_format == LOG_FORMAT_JSON) {
        static const char *const names[] = { "debug", "info", "warn", "error" };
        char node[16] = "null";
        if (log_node != 0)
            snprintf(node, sizeof node, "%u", log_node);
        len = snprintf(line, sizeof line,
                       "{\"time\":\"%s\",\"level\":\"%s\",\"role\":\"%s\",\"pid\":%d,"
                       "\"node\":%s,\"message\":\"", when, names[level], log_role, (int)getpid(), node);
        if (len < 0 || (size_t)len + mlen * 6 + 3 > sizeof line)
            return; /* cannot happen: LOG_LINE_MAX leaves room for the worst case */
        len += (int)json_escape(line + len, message, mlen);
        line[len++] = '"';
        line[len++] = '}';
    } else {
        len = snprintf(line, sizeof line, "%s %s[%d] %s: %.*s", when, log_role, (int)getpid(),
                       tags[level], (int)mlen, message);
        if (len < 0)
            return;
        if ((size_t)len > sizeof line - 2)
            len = (int)sizeof line - 2;
    }
    line[len++] = '\n';
    /* A short or failed write of a log line has nowhere better to be reported. */
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)len);
    (void)ignored;
}
