// Thread controls Swift's Glibc module does not reach: sched_setattr has no glibc wrapper
// (only syscall(2), which is variadic), and pthread_setname_np needs _GNU_SOURCE.
#ifndef TOKENLEDGER_CTHREADS_H
#define TOKENLEDGER_CTHREADS_H

#include <stdint.h>

/// Asks the scheduler (EEVDF, Linux 6.12 and later) for time slices of `nanoseconds` for the
/// calling thread, keeping its policy and nice value: a thread that runs briefly after each
/// wake-up then preempts long-running ones sooner. Returns 0, or an errno value (ENOSYS,
/// EINVAL on kernels without custom slices); the caller treats failure as "no hint".
int tl_thread_request_slice(uint64_t nanoseconds);

/// The calling thread's requested slice in nanoseconds (0: the default), or -errno.
int64_t tl_thread_slice(void);

/// Puts the calling thread in SCHED_FIFO at `priority` (1 is the lowest real-time level).
/// Returns 0, or an errno value: EPERM without CAP_SYS_NICE or an RLIMIT_RTPRIO of at least
/// `priority` (systemd: LimitRTPRIO=1). Threads it starts afterwards are ordinary threads
/// (SCHED_RESET_ON_FORK).
int tl_thread_set_realtime(int priority);

/// Puts thread `tid` of this process (0: the calling thread) in SCHED_IDLE (`idle` != 0: it
/// runs only on a core nothing else wants) or back in SCHED_OTHER at nice 0. Returns 0, or an
/// errno value: leaving SCHED_IDLE needs CAP_SYS_NICE (or an RLIMIT_NICE allowing nice 0), so a
/// caller checks that it can come back (`tl_can_leave_idle`) before it goes.
int tl_thread_set_idle(int tid, int idle);

/// Sets the calling thread's I/O priority class: 3 idle (its requests go after everyone
/// else's where the block layer's scheduler honours priorities, as mq-deadline does), 0 back
/// to the default. Returns the previous value for `tl_thread_restore_io_priority`, or -errno.
int tl_thread_set_io_idle(int idle);
int tl_thread_restore_io_priority(int previous);

/// sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE): starts write-back of that range
/// without waiting and without a cache flush (needs _GNU_SOURCE). Returns 0 or errno.
int tl_start_writeback(int fd, int64_t offset, int64_t count);

/// The calling thread's kernel id (gettid), for `tl_thread_set_idle` from another thread.
int tl_thread_id(void);

/// Whether a thread of this process can enter SCHED_IDLE and leave it again: tried on a
/// short-lived thread of its own, so a refusal strands nothing. 1 or 0.
int tl_can_leave_idle(void);

/// Names the calling thread (15 bytes at most, as `top -H` and perf show it).
int tl_thread_set_name(const char *name);

/// The cores this process may run on (sched_getaffinity: what taskset or a cgroup's cpuset
/// left it), at least 1.
int tl_cpus_available(void);

/// What a thread spinning on one core saw of the core being taken from it, for `bench
/// server`'s reference: on a virtual machine the hypervisor stops a vCPU for milliseconds at a
/// time, and no server on it can answer faster than across such a gap.
typedef struct {
    /// Gaps between two clock readings longer than 1 ms, and than 5 ms.
    int64_t over1ms, over5ms;
    /// Time in gaps longer than 0.5 ms, and the longest gap, in nanoseconds.
    int64_t stalledNs, longestNs;
} tl_stalls;

/// Pins the calling thread to the `cpu`-th core it may run on (0-based), reads CLOCK_MONOTONIC in a loop for `nanoseconds`
/// and reports the gaps (then unpins it). Returns 0 or an errno value from sched_setaffinity.
int tl_measure_stalls(int cpu, int64_t nanoseconds, tl_stalls *out);

#endif
