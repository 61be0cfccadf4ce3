/// One message of the watch stream, decoded from `{"result": {...}}` (or a stream error).
enum EtcdWatchMessage: Sendable {
    case response(EtcdWatchResponse)
    case error(code: Int, message: String)

    init(json: [UInt8]) throws(WireError) {
        let wire = try WireObject(json: json)
        if let error = wire.gatewayError() {
            self = .error(code: error.code, message: error.message)
            return
        }
        guard let result = try wire.object("result") else {
            throw WireError("watch message without result: \(WireObject.preview(json))")
        }
        self = .response(try EtcdWatchResponse(wire: result))
    }
}

/// A watch response: events (all of one or more revisions), or a notice about the watch itself.
public struct EtcdWatchResponse: Hashable, Sendable {
    public var header: EtcdResponseHeader
    public var watchID: Int64
    /// The watch was just created (no events).
    public var created: Bool
    /// The watch was cancelled by the server (compaction, lost leader, …).
    public var canceled: Bool
    /// Nonzero when the requested start revision has been compacted: the oldest revision still
    /// available. Events were lost; re-read.
    public var compactRevision: Int64
    public var cancelReason: String?
    public var events: [EtcdEvent]

    public init(
        header: EtcdResponseHeader = EtcdResponseHeader(), watchID: Int64 = 0, created: Bool = false,
        canceled: Bool = false, compactRevision: Int64 = 0, cancelReason: String? = nil,
        events: [EtcdEvent] = []
    ) {
        self.header = header
        self.watchID = watchID
        self.created = created
        self.canceled = canceled
        self.compactRevision = compactRevision
        self.cancelReason = cancelReason
        self.events = events
    }

    init(wire: WireObject) throws(WireError) {
        var events: [EtcdEvent] = []
        for event in try wire.objects("events") { events.append(try EtcdEvent(wire: event)) }
        self.init(
            header: try EtcdResponseHeader(wire: try wire.object("header")), watchID: try wire.int64("watch_id"),
            created: try wire.bool("created"), canceled: try wire.bool("canceled"),
            compactRevision: try wire.int64("compact_revision"), cancelReason: try wire.string("cancel_reason"),
            events: events)
    }

    /// A progress notification: no events, not a creation or cancellation; every event up to
    /// `header.revision` has been delivered.
    public var isProgressNotify: Bool { events.isEmpty && !created && !canceled && compactRevision == 0 }
}
