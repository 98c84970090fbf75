/*
 * kernel-rules.h — sandbox rules the Linux kernel enforces on a sandboxed context's thread
 * (and on every thread it starts): a seccomp filter (seccomp.c) and a Landlock domain
 * (landlock.c). Internal. Other systems get the audit hook only (sandbox.c).
 */
#ifndef BUNPY_KERNEL_RULES_H
#define BUNPY_KERNEL_RULES_H

#include "context.h"

/* Both: called on the context thread, with its interpreter attached, once the policy is
   loaded and before user code runs. 0, or -1 with a Python exception set. */
int bp_seccomp_apply(const bp_policy *pol);
int bp_landlock_apply(bp_policy *pol);

/* fdtable.c: called first thing on a sandboxed owngil context's thread: a table of its own
   holding stdio and the read ends of the context's wake-up pipes only; process signals blocked. 0, or -1 (errno). */
int bp_fds_isolate(bp_context *c);

/* The Landlock ABI version of the running kernel, or 0 when Landlock is unavailable. */
int bp_landlock_abi(void);

/* A kernel rule `what` is not available here: with requireKernel the context does not start
   (-1, OSError set); otherwise 0 and the audit hook alone holds the rule. */
static inline int bp_kernel_missing(const bp_policy *pol, const char *what) {
    if (!pol->require_kernel) return 0;
    PyErr_Format(PyExc_OSError, "bunpy sandbox: requireKernel is set but %s is not available on this system", what);
    return -1;
}

/* seccomp, then Landlock (which needs no_new_privs, set by the seccomp step). */
static inline int bp_kernel_rules_apply(bp_policy *pol) {
    if (!pol->active) return 0;
    if (bp_seccomp_apply(pol) < 0) return -1;
    return bp_landlock_apply(pol);
}

#endif
