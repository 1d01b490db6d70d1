/*
 * rm_tree: remove a directory and everything under it (a test's temp root,
 * or a replica's data directory a test "loses"). Symlinks are removed, not
 * followed.
 */
#ifndef RINGMQ_TEST_RM_TREE_H
#define RINGMQ_TEST_RM_TREE_H

/* 0, or -1 if something could not be removed. */
int rm_tree(const char *dir);

#endif
