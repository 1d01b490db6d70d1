/*
 * yamlu: small helpers over libyaml's document API for our config files.
 *
 * yamlu_load reads a whole file into @doc (the caller deletes it with
 * yaml_document_delete after a 0 return). Errors: -1 with "path:line: why"
 * in @err. Lookups return NULL for anything that is not what was asked for.
 */
#ifndef RINGMQ_YAMLU_H
#define RINGMQ_YAMLU_H

#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

int yamlu_load(const char *path, yaml_document_t *doc, char *err,
               size_t errlen);

/* The scalar text of @node, or NULL if it is not a scalar. */
const char *yamlu_scalar(yaml_node_t *node);

/* Node @id of @doc (NULL-safe wrapper). */
yaml_node_t *yamlu_node(yaml_document_t *doc, int id);

#endif
