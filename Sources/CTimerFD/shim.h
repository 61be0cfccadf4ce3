// timerfd (Linux), which Swift's Glibc module does not export: the fence guard sleeps on a
// CLOCK_BOOTTIME timer until its deadline.
#ifndef BATON_CTIMERFD_SHIM_H
#define BATON_CTIMERFD_SHIM_H
#include <sys/timerfd.h>
#endif
