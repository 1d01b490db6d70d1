/* yamlu: see yamlu.h. */
#include "common/yamlu.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int yamlu_load(const char *path, yaml_document_t *doc, char *err,
               size_t errlen)
{
    yaml_parser_t parser;
    FILE *f;
    int rv = -1;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "%s: cannot initialize the YAML parser", path);
        goto out_file;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, doc)) {
        snprintf(err, errlen, "%s:%zu: YAML syntax: %s", path,
                 parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "YAML parse error");
        goto out_parser;
    }
    rv = 0;
out_parser:
    yaml_parser_delete(&parser);
out_file:
    fclose(f);
    return rv;
}

const char *yamlu_scalar(yaml_node_t *node)
{
    if (node == NULL || node->type != YAML_SCALAR_NODE) {
        return NULL;
    }
    return (const char *)node->data.scalar.value;
}

yaml_node_t *yamlu_node(yaml_document_t *doc, int id)
{
    return yaml_document_get_node(doc, id);
}

