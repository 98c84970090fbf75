/*
 * landlock.c — the Landlock domain of a sandboxed context's thread (see kernel-rules.h and
 * docs/sandbox.md): with `files`, the kernel allows only the given directories (read-write)
 * and what Python needs to run (read-only) to this thread and the threads it starts. Every
 * open is checked by the kernel: dir_fd, links, sqlite, C extensions. Where Landlock is
 * unavailable (old kernel, other systems) the audit hook's path checks remain, unless the
 * policy has requireKernel: then the context does not start.
 */
#include "kernel-rules.h"

#ifdef __linux__
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's uapi (linux/landlock.h), spelled out: headers may be older than the kernel. */
#define LL_CREATE_RULESET_VERSION 1u
#define LL_RULE_PATH_BENEATH 1
#define LL_RULE_NET_PORT 2
#define LL_EXECUTE (1ull << 0)
#define LL_WRITE_FILE (1ull << 1)
#define LL_READ_FILE (1ull << 2)
#define LL_READ_DIR (1ull << 3)
#define LL_REFER (1ull << 13)     /* ABI 2 */
#define LL_TRUNCATE (1ull << 14)  /* ABI 3 */
#define LL_IOCTL_DEV (1ull << 15) /* ABI 5 */
#define LL_ABI1_ALL ((1ull << 13) - 1)
#define LL_BIND_TCP (1ull << 0)    /* ABI 4 */
#define LL_CONNECT_TCP (1ull << 1) /* ABI 4 */
#define LL_NET_ALL (LL_BIND_TCP | LL_CONNECT_TCP)
#define LL_FILE_RIGHTS (LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV)
#define LL_READ_ONLY (LL_EXECUTE | LL_READ_FILE | LL_READ_DIR)

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

struct ll_ruleset_attr {
    uint64_t handled_access_fs, handled_access_net, scoped;
};
struct ll_net_port {
    uint64_t allowed_access, port;
};
struct ll_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

int bp_landlock_abi(void) {
    long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
    return v < 0 ? 0 : (int)v;
}

static uint64_t handled_fs(int abi) {
    uint64_t r = LL_ABI1_ALL;
    if (abi >= 2) r |= LL_REFER;
    if (abi >= 3) r |= LL_TRUNCATE;
    if (abi >= 5) r |= LL_IOCTL_DEV;
    return r;
}

/* Allows `rights` beneath `path` (a file gets only file rights). A missing path is skipped. */
static int allow_path(int ruleset, const char *path, uint64_t rights) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) rights &= LL_FILE_RIGHTS;
    struct ll_path_beneath rule = {.allowed_access = rights, .parent_fd = fd};
    long rc = syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &rule, 0);
    int err = errno;
    close(fd);
    if (rc != 0) {
        errno = err;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
        return -1;
    }
    return 0;
}

static int allow_tuple(int ruleset, PyObject *paths, uint64_t rights) {
    if (!paths) return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(paths); i++) {
        const char *p = PyUnicode_AsUTF8(PyTuple_GET_ITEM(paths, i));
        if (!p || allow_path(ruleset, p, rights) < 0) return -1;
    }
    return 0;
}

/* Devices and system files that the runtime reads whatever the policy says: devices that
   give nothing away, time zones, the dynamic loader's cache and libraries (C extensions
   load their libraries when imported). Not /proc: /proc/self/mem writes this process. */
static const char *const SYSTEM_READ[] = {"/dev/urandom", "/dev/random", "/etc/localtime", "/usr/share/zoneinfo",
                                          "/etc/ld.so.cache", "/lib", "/lib64", "/usr/lib", "/usr/lib64",
                                          /* TLS certificates and name resolution */
                                          "/etc/ssl", "/etc/pki", "/etc/ca-certificates", "/usr/share/ca-certificates",
                                          "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf", NULL};
static const char *const SYSTEM_RW[] = {"/dev/null", "/dev/zero", NULL};

/* Without `files`: everything but /proc (/proc/self/mem writes this process's memory,
   /proc/<pid>/… reaches other processes). Each entry of / present now is allowed. */
static int allow_all_but_proc(int ruleset, uint64_t all) {
    DIR *root = opendir("/");
    if (!root) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/");
        return -1;
    }
    int rc = 0;
    char path[300];
    for (struct dirent *e; rc == 0 && (e = readdir(root));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || strcmp(e->d_name, "proc") == 0) continue;
        snprintf(path, sizeof path, "/%s", e->d_name);
        rc = allow_path(ruleset, path, all);
    }
    closedir(root);
    return rc;
}

/* network: TCP connect/bind only to/on the listed ports (ABI 4+). */
static int allow_ports(int ruleset, PyObject *ports, uint64_t right) {
    for (Py_ssize_t i = 0; ports && i < PyTuple_GET_SIZE(ports); i++) {
        long port = PyLong_AsLong(PyTuple_GET_ITEM(ports, i));
        if (port == -1 && PyErr_Occurred()) return -1;
        struct ll_net_port rule = {.allowed_access = right, .port = (uint64_t)port};
        if (syscall(SYS_landlock_add_rule, ruleset, LL_RULE_NET_PORT, &rule, 0) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

static int add_file_rules(int ruleset, const bp_policy *pol, uint64_t all) {
    if (!pol->allow_paths) return allow_all_but_proc(ruleset, all);
    int rc = allow_tuple(ruleset, pol->allow_paths, all);
    if (rc == 0) rc = allow_tuple(ruleset, pol->read_paths, LL_READ_ONLY);
    for (int i = 0; rc == 0 && SYSTEM_READ[i]; i++) rc = allow_path(ruleset, SYSTEM_READ[i], LL_READ_ONLY);
    for (int i = 0; rc == 0 && SYSTEM_RW[i]; i++)
        rc = allow_path(ruleset, SYSTEM_RW[i], LL_READ_FILE | LL_WRITE_FILE | (all & LL_TRUNCATE));
    /* processes allowed: programs must still be able to run */
    if (rc == 0 && !pol->refuse_processes) {
        static const char *const BIN[] = {"/bin", "/usr/bin", "/usr/local/bin", NULL};
        for (int i = 0; rc == 0 && BIN[i]; i++) rc = allow_path(ruleset, BIN[i], LL_READ_ONLY);
    }
    return rc;
}

int bp_landlock_apply(bp_policy *pol) {
    int abi = bp_landlock_abi();
    if (pol->net_rules && abi < 4) {
        /* fail closed: without Landlock's TCP rules the ports could not be held */
        PyErr_Format(PyExc_OSError, "bunpy sandbox: network rules need Landlock ABI 4 (Linux 6.7+); this kernel has %d", abi);
        return -1;
    }
    if (abi <= 0) return bp_kernel_missing(pol, "Landlock (Linux 5.13+, enabled)"); /* else the audit hook's checks remain */
    uint64_t all = handled_fs(abi);
    struct ll_ruleset_attr attr = {.handled_access_fs = all, .handled_access_net = pol->net_rules ? LL_NET_ALL : 0};
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (ruleset < 0) {
        if (!pol->net_rules && (errno == ENOSYS || errno == EOPNOTSUPP))
            return bp_kernel_missing(pol, "Landlock (Linux 5.13+, enabled)");
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int rc = add_file_rules(ruleset, pol, all);
    if (rc == 0 && pol->net_rules) rc = allow_ports(ruleset, pol->connect_ports, LL_CONNECT_TCP);
    if (rc == 0 && pol->net_rules) rc = allow_ports(ruleset, pol->bind_ports, LL_BIND_TCP);
    if (rc == 0 && syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        rc = -1;
    }
    if (rc == 0 && pol->allow_paths) pol->files_by_kernel = 1;
    close(ruleset);
    return rc;
}

#else
int bp_landlock_abi(void) { return 0; }
int bp_landlock_apply(bp_policy *pol) {
    /* `network` fails closed: without the kernel the ports could not be held */
    if (pol->net_rules) {
        PyErr_SetString(PyExc_OSError, "bunpy sandbox: network rules need Landlock (Linux only)");
        return -1;
    }
    return bp_kernel_missing(pol, "Landlock (Linux only)");
}
#endif
