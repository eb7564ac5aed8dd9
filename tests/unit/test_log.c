/* JSON log records (common/log.c): every record is one line that parses as a
 * JSON object, whatever bytes its message holds. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/unit/unit.h"

/* Logs one record with stderr sent to a temp file; returns what was written
 * (malloc'ed, NUL-terminated). */
static char *capture(enum log_format format, unsigned node, const char *message)
{
    char path[] = "/tmp/txp-unit-log-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    unlink(path);
    int saved = dup(STDERR_FILENO);
    if (saved < 0 || dup2(fd, STDERR_FILENO) < 0) {
        close(fd);
        return NULL;
    }
    log_set_format(format);
    log_set_node(node);
    log_set_role("unit");
    log_msg(LOG_LEVEL_WARN, "%s", message);
    log_set_format(LOG_FORMAT_TEXT);
    log_set_node(0);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    char *out = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (out && pread(fd, out, (size_t)size, 0) != size) {
        free(out);
        out = NULL;
    }
    if (out)
        out[size] = '\0';
    close(fd);
    return out;
}

TEST(log_json_record_is_one_line_with_every_field)
{
    char *line = capture(LOG_FORMAT_JSON, 7, "worker 0 ready");
    CHECK(line != NULL);
    size_t len = strlen(line);
    CHECK(len > 0 && line[len - 1] == '\n' && strchr(line, '\n') == line + len - 1);
    cJSON *j = cJSON_Parse(line);
    CHECK(j != NULL);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "level")), "warn");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "role")), "unit");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "message")), "worker 0 ready");
    CHECK_EQ_INT(cJSON_GetObjectItem(j, "pid")->valueint, getpid());
    CHECK_EQ_INT(cJSON_GetObjectItem(j, "node")->valueint, 7);
    const char *time = cJSON_GetStringValue(cJSON_GetObjectItem(j, "time"));
    CHECK(time != NULL && strlen(time) == 24 && time[10] == 'T' && time[23] == 'Z');
    cJSON_Delete(j);
    free(line);
}

TEST(log_json_escapes_quotes_control_bytes_and_bad_utf8)
{
    /* Quotes, a backslash, a newline, a control byte, DEL, valid UTF-8 (é,
     * €), a stray continuation byte, an overlong '/', a truncated sequence. */
    const char *msg = "a \"q\" \\ b\nc\x01" "d\x7f" " \xc3\xa9 \xe2\x82\xac \x80 \xc0\xaf \xe2\x82";
    char *line = capture(LOG_FORMAT_JSON, 0, msg);
    CHECK(line != NULL);
    CHECK(strchr(line, '\n') == line + strlen(line) - 1);
    cJSON *j = cJSON_Parse(line);
    CHECK(j != NULL);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "node")));
    const char *want = "a \"q\" \\ b\nc\x01" "d\x7f"
                       " \xc3\xa9 \xe2\x82\xac \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd "
                       "\xef\xbf\xbd\xef\xbf\xbd";
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "message")), want);
    cJSON_Delete(j);
    free(line);
}

TEST(log_text_record_is_unchanged_by_the_json_option)
{
    char *line = capture(LOG_FORMAT_TEXT, 7, "plain \"text\"");
    CHECK(line != NULL);
    CHECK(strstr(line, " unit[") != NULL && strstr(line, "] WARN: plain \"text\"\n") != NULL);
    CHECK(line[0] != '{');
    free(line);
}

TEST(log_format_names_parse)
{
    enum log_format f;
    CHECK_EQ_INT(log_parse_format("json", &f), 0);
    CHECK_EQ_INT(f, LOG_FORMAT_JSON);
    CHECK_EQ_INT(log_parse_format("text", &f), 0);
    CHECK_EQ_INT(f, LOG_FORMAT_TEXT);
    CHECK_EQ_INT(log_parse_format("JSON", &f), -1);
    CHECK_EQ_INT(log_parse_format("", &f), -1);
}
