/*
 * dlist: doubly linked lists with first/last pointers, for any element
 * type with prev/next links (or other link fields, named in the _VIA
 * forms, so that one element can be on several lists). One set of
 * helpers per element type would repeat the same code; the macros keep it
 * in one place. A removed element's links are NULL.
 */
#ifndef RINGMQ_DLIST_H
#define RINGMQ_DLIST_H

#include <stddef.h>

#define DL_APPEND_VIA(first, last, e, prev, next) \
    do {                                          \
        (e)->next = NULL;                         \
        (e)->prev = (last);                       \
        if ((last) != NULL) {                     \
            (last)->next = (e);                   \
        } else {                                  \
            (first) = (e);                        \
        }                                         \
        (last) = (e);                             \
    } while (0)

#define DL_REMOVE_VIA(first, last, e, prev, next) \
    do {                                          \
        if ((e)->prev != NULL) {                  \
            (e)->prev->next = (e)->next;          \
        } else {                                  \
            (first) = (e)->next;                  \
        }                                         \
        if ((e)->next != NULL) {                  \
            (e)->next->prev = (e)->prev;          \
        } else {                                  \
            (last) = (e)->prev;                   \
        }                                         \
        (e)->prev = NULL;                         \
        (e)->next = NULL;                         \
    } while (0)

#define DL_APPEND(first, last, e) DL_APPEND_VIA(first, last, e, prev, next)
#define DL_REMOVE(first, last, e) DL_REMOVE_VIA(first, last, e, prev, next)

#endif
