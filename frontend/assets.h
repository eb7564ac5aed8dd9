/* Static files compiled into the binary (see tools/embed_assets.sh). */
#ifndef TXP_ASSETS_H
#define TXP_ASSETS_H

#include <stddef.h>

struct asset {
    const char *name;
    const unsigned char *data;
    size_t size;
};

/* Terminated by an entry with name == NULL. */
extern const struct asset assets[];

#endif
