/* A disk that fails to sync, for the tests in failed_sync.rs: preloaded
 * into the real binary (LD_PRELOAD), it makes fsync and fdatasync fail
 * with EIO for the file whose path ends with FAILSYNC_SUFFIX, from the
 * moment the file FAILSYNC_WHEN exists; every other call, and every call
 * before that, goes to the C library. A real disk's failed write-back
 * is reported once per open file, and later syncs may succeed; here every
 * sync fails from then on, and the data stays in the cache. The tests rely
 * on neither: bouncer stops at the first failure. Built by the test with
 * the C compiler Rust links with. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int should_fail(int fd) {
    const char *when = getenv("FAILSYNC_WHEN");
    const char *suffix = getenv("FAILSYNC_SUFFIX");
    if (when == NULL || suffix == NULL || access(when, F_OK) != 0) {
        return 0;
    }
    char link[64];
    char path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) {
        return 0;
    }
    path[n] = '\0';
    size_t len = strlen(suffix);
    return (size_t)n >= len && strcmp(path + n - len, suffix) == 0;
}

int fsync(int fd) {
    if (should_fail(fd)) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    if (should_fail(fd)) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
