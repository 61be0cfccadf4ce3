import CCurl

#if canImport(Glibc)
    import Glibc
#endif

/// A POSIX thread that can be joined, which Foundation's `Thread` cannot: a client that shuts down
/// waits until its threads have ended, their thread-local destructors included (OpenSSL frees its
/// per-thread state there). A process that exits while such a destructor runs races OpenSSL's own
/// exit handler, and crashes now and then (seen as a double free in `baton list`, about once in
/// 300 runs).
final class JoinableThread: @unchecked Sendable {
    private final class Body {
        let name: String
        let run: () -> Void
        init(name: String, run: @escaping () -> Void) {
            self.name = name
            self.run = run
        }
    }

    private var handle = pthread_t()

    /// Starts `body` on a new thread named `name` (cut to the 15 bytes Linux keeps); nil when the
    /// system refuses a thread.
    init?(name: String, _ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Body(name: name, run: body))
        let created = pthread_create(
            &handle, nil,
            { raw in
                guard let raw else { return nil }
                let body = Unmanaged<Body>.fromOpaque(raw).takeRetainedValue()
                _ = baton_pthread_setname(pthread_self(), String(decoding: body.name.utf8.prefix(15), as: UTF8.self))
                body.run()
                return nil
            }, box.toOpaque())
        guard created == 0 else {
            box.release()
            return nil
        }
    }

    /// Waits until the thread has ended, at most until `deadline`; false when it is still running.
    func join(until deadline: ContinuousClock.Instant) -> Bool {
        let left = max(.zero, deadline - ContinuousClock.now)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let (seconds, attoseconds) = left.components
        var nanoseconds = Int(now.tv_nsec) + Int(attoseconds / 1_000_000_000)
        var wholeSeconds = Int(now.tv_sec) + Int(seconds)
        if nanoseconds >= 1_000_000_000 {
            wholeSeconds += 1
            nanoseconds -= 1_000_000_000
        }
        var limit = timespec(tv_sec: wholeSeconds, tv_nsec: nanoseconds)
        return baton_pthread_timedjoin(handle, &limit) == 0
    }

    /// Lets the thread end on its own (its resources are freed when it does).
    func detach() { pthread_detach(handle) }
}
