/* Query-string decoding for GET /balance?card_number=... (frontend/query.c). */
#include <errno.h>
#include <string.h>

#include "frontend/query.h"
#include "tests/unit/unit.h"

TEST(http_query_decodes_plus_and_percent_as_space)
{
    char out[64];
    size_t len = 0;
    CHECK_EQ_INT(query_param("card_number=6219+8619%200042%208640", "card_number", out,
                             sizeof out, &len), 0);
    CHECK_STR(out, "6219 8619 0042 8640");
    CHECK_EQ_INT(len, 19);
}

TEST(http_query_finds_the_named_parameter)
{
    char out[64];
    size_t len = 0;
    CHECK_EQ_INT(query_param("a=1&card_number=42&b=2", "card_number", out, sizeof out, &len), 0);
    CHECK_STR(out, "42");
    CHECK_EQ_INT(query_param("card%5Fnumber=7", "card_number", out, sizeof out, &len), 0);
    CHECK_STR(out, "7");
    CHECK_EQ_INT(query_param("card_number=1&card_number=2", "card_number", out, sizeof out,
                             &len), 0);
    CHECK_STR(out, "1");
    CHECK_EQ_INT(query_param("card_number=", "card_number", out, sizeof out, &len), 0);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(query_param("card_number", "card_number", out, sizeof out, &len), 0);
    CHECK_EQ_INT(len, 0);
}

TEST(http_query_missing_parameter_is_enoent)
{
    char out[64];
    size_t len = 0;
    CHECK_EQ_INT(query_param(NULL, "card_number", out, sizeof out, &len), -ENOENT);
    CHECK_EQ_INT(query_param("", "card_number", out, sizeof out, &len), -ENOENT);
    CHECK_EQ_INT(query_param("card=1&number=2", "card_number", out, sizeof out, &len), -ENOENT);
    CHECK_EQ_INT(query_param("card_number_x=1", "card_number", out, sizeof out, &len),
                 -ENOENT);
    CHECK_EQ_INT(query_param("&&", "card_number", out, sizeof out, &len), -ENOENT);
}

TEST(http_query_bad_escape_and_overflow)
{
    char out[8];
    size_t len = 0;
    CHECK_EQ_INT(query_param("card_number=12%2", "card_number", out, sizeof out, &len),
                 -EINVAL);
    CHECK_EQ_INT(query_param("card_number=12%zz", "card_number", out, sizeof out, &len),
                 -EINVAL);
    CHECK_EQ_INT(query_param("card_number=1234567", "card_number", out, sizeof out, &len), 0);
    CHECK_EQ_INT(query_param("card_number=12345678", "card_number", out, sizeof out, &len),
                 -E2BIG);
}

TEST(http_query_keeps_decoded_nul_in_length)
{
    char out[16];
    size_t len = 0;
    CHECK_EQ_INT(query_param("card_number=12%0034", "card_number", out, sizeof out, &len), 0);
    CHECK_EQ_INT(len, 5);
    CHECK(memcmp(out, "12\0" "34", 5) == 0);
}
