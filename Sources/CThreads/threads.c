#define _GNU_SOURCE
#include "cthreads.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// The kernel's struct sched_attr (include/uapi/linux/sched/types.h), declared here because
// Debian 12's headers predate it in <sched.h>.
struct tl_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
    uint32_t sched_util_min;
    uint32_t sched_util_max;
};

#ifndef SYS_sched_setattr
#define SYS_sched_setattr 314
#endif
#ifndef SYS_sched_getattr
#define SYS_sched_getattr 315
#endif

int tl_thread_request_slice(uint64_t nanoseconds) {
    struct tl_sched_attr attr;
    memset(&attr, 0, sizeof attr);
    if (syscall(SYS_sched_getattr, 0, &attr, (unsigned)sizeof attr, 0) != 0) return errno;
    if (attr.sched_policy != SCHED_OTHER) return EINVAL;
    attr.size = sizeof attr;
    attr.sched_flags = 0;
    attr.sched_runtime = nanoseconds;
    if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0) return errno;
    return 0;
}

int64_t tl_thread_slice(void) {
    struct tl_sched_attr attr;
    memset(&attr, 0, sizeof attr);
    if (syscall(SYS_sched_getattr, 0, &attr, (unsigned)sizeof attr, 0) != 0) return -(int64_t)errno;
    return (int64_t)attr.sched_runtime;
}

int tl_thread_set_name(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}

int tl_thread_set_realtime(int priority) {
    struct sched_param p;
    memset(&p, 0, sizeof p);
    p.sched_priority = priority;
    // sched_setscheduler(0, …) is the calling thread on Linux (pthread_setschedparam cannot
    // take the flag). SCHED_RESET_ON_FORK: a thread this one happens to start (a Dispatch
    // worker, a file writer) is an ordinary thread, not a second real-time one.
    if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &p) != 0) return errno;
    return 0;
}

int tl_thread_set_idle(int tid, int idle) {
    struct sched_param p;
    memset(&p, 0, sizeof p);
    if (sched_setscheduler(tid, idle ? SCHED_IDLE : SCHED_OTHER, &p) != 0) return errno;
    return 0;
}

int tl_thread_id(void) {
    return (int)syscall(SYS_gettid);
}

static void *tl_idle_probe(void *result) {
    *(int *)result = tl_thread_set_idle(0, 1) == 0 && tl_thread_set_idle(0, 0) == 0;
    return NULL;
}

int tl_can_leave_idle(void) {
    int result = 0;
    pthread_t t;
    if (pthread_create(&t, NULL, tl_idle_probe, &result) != 0) return 0;
    pthread_join(t, NULL);
    return result;
}

// <linux/ioprio.h>: class in the top 3 bits of 16; IOPRIO_WHO_PROCESS with 0 is the caller.
#define TL_IOPRIO_CLASS_SHIFT 13
#define TL_IOPRIO_CLASS_IDLE 3
#define TL_IOPRIO_WHO_PROCESS 1

int tl_thread_set_io_idle(int idle) {
    long previous = syscall(SYS_ioprio_get, TL_IOPRIO_WHO_PROCESS, 0);
    if (previous < 0) return -errno;
    int value = idle ? (TL_IOPRIO_CLASS_IDLE << TL_IOPRIO_CLASS_SHIFT) : 0;
    if (syscall(SYS_ioprio_set, TL_IOPRIO_WHO_PROCESS, 0, value) != 0) return -errno;
    return (int)previous;
}

int tl_thread_restore_io_priority(int previous) {
    if (previous < 0) return 0;
    return syscall(SYS_ioprio_set, TL_IOPRIO_WHO_PROCESS, 0, previous) == 0 ? 0 : errno;
}

int tl_start_writeback(int fd, int64_t offset, int64_t count) {
    return sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE) == 0 ? 0 : errno;
}

int tl_cpus_available(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (int)n : 1;
    }
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

static int64_t monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int tl_measure_stalls(int cpu, int64_t nanoseconds, tl_stalls *out) {
    cpu_set_t before, one;
    if (sched_getaffinity(0, sizeof before, &before) != 0) return errno;
    // The cpu-th core this thread may run on, not core number cpu: taskset may have left gaps.
    int core = -1;
    for (int c = 0, seen = 0; c < CPU_SETSIZE && core < 0; c++) {
        if (CPU_ISSET(c, &before) && seen++ == cpu) core = c;
    }
    if (core < 0) return EINVAL;
    CPU_ZERO(&one);
    CPU_SET(core, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) return errno;
    tl_stalls s = {0, 0, 0, 0};
    int64_t last = monotonic_ns(), end = last + nanoseconds;
    while (last < end) {
        int64_t t = monotonic_ns(), gap = t - last;
        if (gap > 500000) {
            s.stalledNs += gap;
            if (gap > 1000000) s.over1ms++;
            if (gap > 5000000) s.over5ms++;
        }
        if (gap > s.longestNs) s.longestNs = gap;
        last = t;
    }
    sched_setaffinity(0, sizeof before, &before);
    *out = s;
    return 0;
}
