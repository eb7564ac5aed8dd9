/* The account endpoints: POST /accounts (open one), GET /accounts/<card>
 * (balance, creation time, counts) and GET /accounts/<card>/transactions
 * (its statement, newest first, paged). Handlers with the route table's
 * signature (routes.c). */
#ifndef TXP_ACCOUNTS_H
#define TXP_ACCOUNTS_H

#include "frontend/routes.h"

struct http_req;

#define ACCOUNTS_DEFAULT_LIMIT 50

/* POST /accounts. */
void accounts_post(struct routes_ctx *c, struct http_req *req, const char *tail,
                   const char *query);
/* GET /accounts/<card> and /accounts/<card>/transactions; tail is what
 * follows "/accounts/", still URL-encoded. */
void accounts_get(struct routes_ctx *c, struct http_req *req, const char *tail,
                  const char *query);

#endif
