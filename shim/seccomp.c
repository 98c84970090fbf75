/*
 * seccomp.c — the seccomp filter of a sandboxed context's thread (see kernel-rules.h and
 * docs/sandbox.md). Raw BPF, no libseccomp. The filter belongs to the thread that installs
 * it (no TSYNC) and is inherited by the threads it starts; the rest of the process is
 * untouched. Nothing is killed: a refused call returns an errno (EPERM: Python raises
 * PermissionError).
 */
#include "kernel-rules.h"

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define BP_AUDIT_ARCH AUDIT_ARCH_X86_64
#else
#define BP_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#define MAX_INSNS 320
typedef struct {
    struct sock_filter ins[MAX_INSNS];
    int n;
} bp_prog;

static void emit(bp_prog *p, struct sock_filter f) {
    if (p->n < MAX_INSNS) p->ins[p->n] = f;
    p->n++;
}
#define STMT(code, k) emit(p, (struct sock_filter)BPF_STMT(code, k))
#define JUMP(code, k, jt, jf) emit(p, (struct sock_filter)BPF_JUMP(code, k, jt, jf))
#define RET_ERRNO(e) STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
#define RET_ALLOW() STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
/* low 32 bits of argument i (both supported architectures are little-endian) */
#define LOAD_ARG(i) STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args) + 8 * (i))

static void refuse(bp_prog *p, int nr, int err) {
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1);
    RET_ERRNO(err);
}

/* `if (nr == NR) { block }`: opens the test, returns where to patch; every path of the
   block ends in a RET, so the accumulator need not be reloaded after it. */
static int open_block(bp_prog *p, int nr) {
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 0);
    return p->n - 1;
}
static void close_block(bp_prog *p, int at) {
    if (at < MAX_INSNS) p->ins[at].jf = (unsigned char)(p->n - at - 1);
}

/* The target-pid test of kill-like calls (pid in the accumulator). With processes refused
   only the own process is a target; otherwise the parent, process groups (0, negative)
   and every process (-1) are refused, other processes (children) allowed. */
static void pid_rule(bp_prog *p, const bp_policy *pol, unsigned self, unsigned parent) {
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, self, 0, 1);
    RET_ALLOW();
    if (pol->refuse_processes) {
        RET_ERRNO(EPERM);
        return;
    }
    JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x80000000u, 0, 1);
    RET_ERRNO(EPERM);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1);
    RET_ERRNO(EPERM);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, parent, 0, 1);
    RET_ERRNO(EPERM);
    RET_ALLOW();
}

/* Refused in every sandboxed context: other processes' memory, kernel attack surface that
   bypasses the other rules (io_uring performs opens and connects the filter never sees),
   namespaces and mounts, kernel keys. */
static const int ALWAYS[] = {
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_io_uring_setup, SYS_io_uring_enter,
    SYS_io_uring_register, SYS_userfaultfd, SYS_personality, SYS_bpf, SYS_perf_event_open, SYS_kexec_load,
    SYS_kexec_file_load, SYS_mount, SYS_umount2, SYS_unshare, SYS_setns, SYS_pivot_root, SYS_chroot, SYS_keyctl,
    SYS_add_key, SYS_request_key, SYS_tkill, SYS_pidfd_send_signal, SYS_pidfd_getfd, SYS_open_by_handle_at,
    SYS_name_to_handle_at, SYS_fanotify_init, SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_open_tree,
    SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_mount_setattr, SYS_quotactl,
    SYS_acct, SYS_swapon, SYS_swapoff, SYS_reboot,
    /* a filter of the sandboxed code's own, installed with SECCOMP_FILTER_FLAG_TSYNC, would
       apply to every thread of the process (and a user-notification filter would hand it
       the host's system calls to answer) */
    SYS_seccomp,
    /* the working directory is the whole process's: moving it would redirect the host's
       relative paths */
    SYS_chdir, SYS_fchdir,
#ifdef SYS_iopl
    SYS_iopl, SYS_ioperm,
#endif
#ifdef SYS_process_madvise
    SYS_process_madvise,
#endif
#ifdef SYS_kcmp
    SYS_kcmp,
#endif
};

/* prctl options that change the process as a whole or its protections. The rest
   (PR_SET_NAME, PR_GET_*, PR_SET_VMA, ...) are what glibc and Python use. */
static const unsigned PRCTL_REFUSED[] = {
    PR_SET_DUMPABLE, 0x59616d61 /* PR_SET_PTRACER */, PR_SET_MM, PR_SET_CHILD_SUBREAPER, PR_SET_SECUREBITS,
    PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_SET_KEEPCAPS, PR_SET_SPECULATION_CTRL, 59 /* PR_SET_SYSCALL_USER_DISPATCH */,
    57 /* PR_SET_IO_FLUSHER */, 65 /* PR_SET_MDWE */, PR_SET_SECCOMP,
};

static void build(bp_prog *p, const bp_policy *pol) {
    unsigned self = (unsigned)getpid(), parent = (unsigned)getppid();
    /* another syscall ABI (i386 int 0x80 on x86_64) has other numbers: refuse it whole */
    STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, BP_AUDIT_ARCH, 1, 0);
    RET_ERRNO(EPERM);
    STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef __x86_64__
    JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u /* __X32_SYSCALL_BIT */, 0, 1);
    RET_ERRNO(EPERM);
#endif
    for (size_t i = 0; i < sizeof ALWAYS / sizeof *ALWAYS; i++) refuse(p, ALWAYS[i], EPERM);

    int at = open_block(p, SYS_prctl);
    LOAD_ARG(0);
    for (size_t i = 0; i < sizeof PRCTL_REFUSED / sizeof *PRCTL_REFUSED; i++) {
        JUMP(BPF_JMP | BPF_JEQ | BPF_K, PRCTL_REFUSED[i], 0, 1);
        RET_ERRNO(EPERM);
    }
    RET_ALLOW();
    close_block(p, at);

    /* landlock_restrict_self: more rules for this thread are harmless; flags other than the
       logging ones (bits 0-2), such as a future "all threads" flag, are not */
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
    at = open_block(p, SYS_landlock_restrict_self);
    LOAD_ARG(1);
    JUMP(BPF_JMP | BPF_JSET | BPF_K, ~7u, 0, 1);
    RET_ERRNO(EPERM);
    RET_ALLOW();
    close_block(p, at);

    /* prlimit64: this process's limits only, not another's */
    at = open_block(p, SYS_prlimit64);
    LOAD_ARG(0);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, self, 0, 1);
    RET_ALLOW();
    RET_ERRNO(EPERM);
    close_block(p, at);

    /* signals: kill(pid), rt_sigqueueinfo(pid); tgkill(tgid, ...), rt_tgsigqueueinfo(tgid, ...) */
    const int by_pid[] = {SYS_kill, SYS_rt_sigqueueinfo, SYS_tgkill, SYS_rt_tgsigqueueinfo};
    for (size_t i = 0; i < 4; i++) {
        at = open_block(p, by_pid[i]);
        LOAD_ARG(0);
        pid_rule(p, pol, self, parent);
        close_block(p, at);
    }

    if (pol->refuse_processes) {
#ifdef SYS_fork
        refuse(p, SYS_fork, EPERM);
        refuse(p, SYS_vfork, EPERM);
#endif
        refuse(p, SYS_execve, EPERM);
        refuse(p, SYS_execveat, EPERM);
        /* clone3 passes its flags in memory the filter cannot read: ENOSYS makes glibc fall
           back to clone, whose flags are argument 0 (the same on x86_64 and aarch64) */
        refuse(p, SYS_clone3, ENOSYS);
        at = open_block(p, SYS_clone);
        LOAD_ARG(0);
        JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1);
        RET_ALLOW();
        RET_ERRNO(EPERM);
        close_block(p, at);
    }
    if (pol->refuse_sockets || pol->net_rules) {
        /* AF_UNIX stays: asyncio's event loop wakes itself through a local socketpair */
        at = open_block(p, SYS_socketpair);
        LOAD_ARG(0);
        JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1);
        RET_ALLOW();
        RET_ERRNO(EPERM);
        close_block(p, at);
        /* socket() itself is refused for AF_UNIX too: a pathname or abstract Unix socket
           reaches host services (the Docker or D-Bus socket) that no port rule covers */
        at = open_block(p, SYS_socket);
        LOAD_ARG(0);
        if (pol->net_rules) {
            /* network: TCP only (Landlock holds its ports; it does not see UDP or raw sockets) */
            JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET, 1, 0);
            JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 0, 6);
            LOAD_ARG(1);
            STMT(BPF_ALU | BPF_AND | BPF_K, 0xf); /* the type without SOCK_NONBLOCK/SOCK_CLOEXEC */
            JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOCK_STREAM, 0, 3);
            LOAD_ARG(2);
            JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0);
            JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6 /* IPPROTO_TCP */, 1, 0);
        }
        RET_ERRNO(EPERM);
        if (pol->net_rules) RET_ALLOW();
        close_block(p, at);
    }
    RET_ALLOW();
}

int bp_seccomp_apply(const bp_policy *pol) {
    bp_prog *p = PyMem_RawCalloc(1, sizeof *p);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    build(p, pol);
    int rc = -1;
    if (p->n > MAX_INSNS) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy sandbox: the seccomp filter is too long");
    } else if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
    } else {
        struct sock_fprog prog = {.len = (unsigned short)p->n, .filter = p->ins};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) PyErr_SetFromErrno(PyExc_OSError);
        else rc = 0;
    }
    PyMem_RawFree(p);
    return rc;
}

#else /* another system or architecture: no filter (the audit hook still applies) */
int bp_seccomp_apply(const bp_policy *pol) {
    /* `network` fails closed: without the kernel the ports could not be held */
    if (pol->net_rules) {
        PyErr_SetString(PyExc_OSError, "bunpy sandbox: network rules need seccomp (Linux on x86_64 or aarch64 only)");
        return -1;
    }
    return bp_kernel_missing(pol, "seccomp (Linux on x86_64 or aarch64 only)");
}
#endif
