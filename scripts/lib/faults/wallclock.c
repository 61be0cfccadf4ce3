/* A wall-clock jump for one process (fault matrix scenario 11), loaded with LD_PRELOAD.
 *
 * Only the wall clock moves: CLOCK_REALTIME (and its coarse variant), gettimeofday() and time()
 * are shifted by the offset in seconds ("+600", "-600", "0") read from the file named by
 * BATON_WALLCLOCK_FILE, re-read at most every 100 ms. CLOCK_MONOTONIC, CLOCK_BOOTTIME and every
 * timer are left alone — exactly what `date -s` does to a running process, without touching the
 * rest of the machine. (libfaketime was tried first: with an offset it also shifts the absolute
 * timerfd deadlines that the Swift runtime uses for Task.sleep on CLOCK_MONOTONIC, so a backward
 * jump stalls every sleeping task — something a real clock jump never does.) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
static _Atomic(clock_gettime_fn) real_clock_gettime;
static _Atomic long long offset_ns;
static _Atomic long long checked_at_ns = -1000000000LL;

static clock_gettime_fn real(void) {
    clock_gettime_fn fn = atomic_load(&real_clock_gettime);
    if (!fn) {
        fn = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
        atomic_store(&real_clock_gettime, fn);
    }
    return fn;
}

static long long offset(void) {
    struct timespec now;
    real()(CLOCK_MONOTONIC, &now);
    long long ns = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    if (ns - atomic_load(&checked_at_ns) >= 100000000LL) {
        atomic_store(&checked_at_ns, ns);
        const char *path = getenv("BATON_WALLCLOCK_FILE");
        FILE *file = path ? fopen(path, "r") : NULL;
        if (file) {
            double seconds;
            if (fscanf(file, "%lf", &seconds) == 1) atomic_store(&offset_ns, (long long)(seconds * 1e9));
            fclose(file);
        }
    }
    return atomic_load(&offset_ns);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int result = real()(id, ts);
    if (result == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long total = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset();
        ts->tv_sec = (time_t)(total / 1000000000LL);
        ts->tv_nsec = (long)(total % 1000000000LL);
    }
    return result;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    (void)tz;
    struct timespec ts;
    int result = clock_gettime(CLOCK_REALTIME, &ts);
    if (result == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return result;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
