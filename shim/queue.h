/*
 * queue.h — a lock-free multi-producer, single-consumer queue: producers push onto an
 * atomic stack; the one consumer takes the whole stack at once and reverses it, so items
 * come out in the order each producer pushed them. Push reports the empty -> non-empty
 * edge, which is when the consumer needs waking.
 */
#ifndef BUNPY_QUEUE_H
#define BUNPY_QUEUE_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct bp_node {
    struct bp_node *next;
} bp_node;

typedef struct bp_mpsc {
    _Atomic(bp_node *) head;
} bp_mpsc;

/* Returns 1 when the queue was empty before this push. */
static inline int bp_mpsc_push(bp_mpsc *q, bp_node *n) {
    bp_node *old = atomic_load_explicit(&q->head, memory_order_relaxed);
    do {
        n->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&q->head, &old, n, memory_order_release, memory_order_relaxed));
    return old == NULL;
}

/* Everything pushed so far, oldest first (NULL when empty). Consumer only. */
static inline bp_node *bp_mpsc_take(bp_mpsc *q) {
    bp_node *n = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
    bp_node *prev = NULL;
    while (n) {
        bp_node *next = n->next;
        n->next = prev;
        prev = n;
        n = next;
    }
    return prev;
}

static inline int bp_mpsc_empty(bp_mpsc *q) {
    return atomic_load_explicit(&q->head, memory_order_acquire) == NULL;
}

#endif
