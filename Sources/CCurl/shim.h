// Non-variadic wrappers around libcurl's variadic calls, which Swift cannot import.
#ifndef BATON_CCURL_SHIM_H
#define BATON_CCURL_SHIM_H

#include <curl/curl.h>
#include <pthread.h>
#include <time.h>

// glibc's joins and names for the etcd client's worker threads (declared by pthread.h only with
// _GNU_SOURCE, which Swift's Glibc module does not set).
extern int pthread_timedjoin_np(pthread_t thread, void **retval, const struct timespec *abstime);
extern int pthread_setname_np(pthread_t thread, const char *name);

static inline int baton_pthread_timedjoin(pthread_t thread, const struct timespec *abstime) {
    return pthread_timedjoin_np(thread, NULL, abstime);
}

static inline int baton_pthread_setname(pthread_t thread, const char *name) {
    return pthread_setname_np(thread, name);
}

static inline CURLcode baton_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode baton_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode baton_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode baton_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode baton_curl_setopt_off(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

typedef size_t (*baton_curl_data_callback)(char *data, size_t size, size_t count, void *context);
typedef int (*baton_curl_xferinfo_callback)(void *context, curl_off_t dltotal, curl_off_t dlnow,
                                            curl_off_t ultotal, curl_off_t ulnow);

static inline CURLcode baton_curl_setopt_write_function(CURL *handle, baton_curl_data_callback callback) {
    return curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, callback);
}

static inline CURLcode baton_curl_setopt_header_function(CURL *handle, baton_curl_data_callback callback) {
    return curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, callback);
}

static inline CURLcode baton_curl_setopt_xferinfo_function(CURL *handle, baton_curl_xferinfo_callback callback) {
    return curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, callback);
}

static inline CURLcode baton_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode baton_curl_getinfo_double(CURL *handle, CURLINFO info, double *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode baton_curl_getinfo_string(CURL *handle, CURLINFO info, char **value) {
    return curl_easy_getinfo(handle, info, value);
}

#endif
