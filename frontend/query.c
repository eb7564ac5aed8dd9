/* Query-string decoding for GET parameters (application/x-www-form-urlencoded
 * rules: '+' is a space, %XX a byte), also used for the card number in
 * /accounts/<card> paths. */
#include "frontend/query.h"

#include <errno.h>
#include <string.h>

#include "common/hex.h"

long query_decode(const char *s, size_t len, char *out, size_t cap)
{
    if (cap == 0)
        return -E2BIG;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (len - i < 3 || hex_digit(s[i + 1]) < 0 || hex_digit(s[i + 2]) < 0)
                return -EINVAL;
            c = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
            i += 2;
        }
        if (n + 1 >= cap)
            return -E2BIG;
        out[n++] = c;
    }
    out[n] = '\0';
    return (long)n;
}

int query_param(const char *query, const char *name, char *out, size_t cap, size_t *out_len)
{
    if (cap == 0)
        return -E2BIG;
    while (query && *query) {
        size_t pair_len = strcspn(query, "&");
        const char *eq = memchr(query, '=', pair_len);
        size_t key_len = eq ? (size_t)(eq - query) : pair_len;
        char key[64];
        long k = query_decode(query, key_len, key, sizeof key);
        if (k >= 0 && (size_t)k == strlen(name) && memcmp(key, name, (size_t)k) == 0) {
            const char *val = eq ? eq + 1 : query + pair_len;
            long v = query_decode(val, (size_t)(query + pair_len - val), out, cap);
            if (v < 0)
                return (int)v;
            *out_len = (size_t)v;
            return 0;
        }
        query += pair_len;
        if (*query == '&')
            query++;
    }
    return -ENOENT;
}
