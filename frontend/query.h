/* URL query strings (?a=1&b=2) and path segments decoded without libevent,
 * so the rules for '+' and %XX escapes are unit-tested in one place. */
#ifndef TXP_QUERY_H
#define TXP_QUERY_H

#include <stddef.h>

/* Finds the first parameter whose decoded name is name and decodes its value
 * into out (cap bytes, NUL-terminated; the length, which may count decoded
 * NUL bytes, goes to *out_len). '+' and %20 both decode to a space.
 * Returns 0, -ENOENT when absent, -EINVAL for a malformed escape, -E2BIG
 * when the value does not fit. query may be NULL (no parameters). */
int query_param(const char *query, const char *name, char *out, size_t cap, size_t *out_len);

/* Decodes s[0, len) by the same rules into out (cap bytes, NUL-terminated).
 * Returns the decoded length, -EINVAL for a malformed escape or -E2BIG when
 * it does not fit. */
long query_decode(const char *s, size_t len, char *out, size_t cap);

#endif
