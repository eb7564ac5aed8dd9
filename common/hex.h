/* The value of one hexadecimal digit, for the parsers that read hex by hand:
 * chunk sizes in the HTTP layer, %XX escapes in query strings. */
#ifndef TXP_HEX_H
#define TXP_HEX_H

/* 0..15, or -1 when c is not a hex digit. */
static inline int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
