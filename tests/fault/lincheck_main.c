/*
 * lincheck: check register histories for linearizability.
 *
 *   lincheck FILE...               one line per file: "FILE linearizable"
 *                                  or "FILE not-linearizable ..."; exit 1
 *                                  if any is not (2: unreadable, undecided)
 *   lincheck --verdicts VERDICTS DIR
 *                                  check every "NAME verdict" of VERDICTS
 *                                  (files in DIR) against its verdict; exit
 *                                  0 only if all agree
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long len;

    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    if (buf) {
        buf[len] = '\0';
    }
    fclose(f);
    return buf;
}

/* 1 linearizable, 0 not, -1 error (printed). */
static int check_file(const char *path, bool quiet)
{
    char *text = slurp(path);
    struct lc_op *ops;
    size_t n;
    struct lc_result res;
    char err[256];
    int rv;

    if (text == NULL) {
        fprintf(stderr, "lincheck: cannot read %s\n", path);
        return -1;
    }
    if (lc_parse_jepsen_log(text, &ops, &n, err, sizeof(err)) != 0) {
        fprintf(stderr, "lincheck: %s: %s\n", path, err);
        free(text);
        return -1;
    }
    free(text);
    rv = lc_check(ops, n, &res);
    if (rv < 0) {
        fprintf(stderr, "lincheck: %s: too large to decide\n", path);
    } else if (!quiet) {
        if (rv) {
            printf("%s linearizable (%zu ops, %llu states)\n", path,
                   res.ops_checked, (unsigned long long)res.states);
        } else {
            const struct lc_op *o = &ops[res.stuck_op];

            printf("%s not-linearizable (%zu ops, %llu states; longest "
                   "prefix %zu, then process %d's operation at time %llu "
                   "cannot be placed)\n",
                   path, res.ops_checked, (unsigned long long)res.states,
                   res.longest_prefix, o->process,
                   (unsigned long long)o->call);
        }
    }
    free(ops);
    return rv;
}

int main(int argc, char **argv)
{
    int i;
    int worst = 0;

    if (argc == 4 && strcmp(argv[1], "--verdicts") == 0) {
        FILE *f = fopen(argv[2], "r");
        char name[256];
        char verdict[64];
        int agree = 0;
        int disagree = 0;

        if (f == NULL) {
            fprintf(stderr, "lincheck: cannot read %s\n", argv[2]);
            return 2;
        }
        while (fscanf(f, "%255s %63s", name, verdict) == 2) {
            char path[1024];
            int rv;

            snprintf(path, sizeof(path), "%s/%s", argv[3], name);
            rv = check_file(path, true);
            if (rv < 0 ||
                (rv == 1) != (strcmp(verdict, "linearizable") == 0)) {
                printf("DISAGREE %s: expected %s, got %s\n", name, verdict,
                       rv < 0 ? "error" : rv ? "linearizable"
                                             : "not-linearizable");
                disagree++;
            } else {
                agree++;
            }
        }
        fclose(f);
        printf("lincheck: %d histories agree with their verdicts, %d "
               "disagree\n",
               agree, disagree);
        return disagree ? 1 : 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: lincheck FILE... | lincheck --verdicts "
                        "VERDICTS DIR\n");
        return 2;
    }
    for (i = 1; i < argc; i++) {
        int rv = check_file(argv[i], false);

        if (rv < 0) {
            worst = 2;
        } else if (rv == 0 && worst == 0) {
            worst = 1;
        }
    }
    return worst;
}
