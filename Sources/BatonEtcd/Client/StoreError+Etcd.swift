import BatonCore

/// `EtcdClient` throws `StoreError` (BatonCore's one error type for the store) and nothing else,
/// apart from `CancellationError` when the calling task is cancelled. Decisions are made on the
/// gRPC code of etcd's `{"error", "code", "message"}` reply, never on the HTTP status; the gRPC code,
/// etcd's message and the endpoint are kept in the error.
extension StoreError {
    /// Maps etcd's gRPC status to a store error.
    static func etcd(code: Int, message: String, endpoint: String?) -> StoreError {
        let lower = message.lowercased()
        let mapped: Code
        switch code {
        case 14: mapped = .unavailable  // no leader, leader changed, request timed out, stopped
        case 4: mapped = .timeout
        case 5: mapped = lower.contains("lease") ? .leaseNotFound : .other
        case 11: mapped = lower.contains("compacted") ? .compacted : .invalidRequest
        case 7, 16: mapped = .auth
        case 8: mapped = lower.contains("too many requests") ? .unavailable : .other
        case 3, 9:
            if lower.contains("auth") || lower.contains("user name") || lower.contains("password")
                || lower.contains("permission") || lower.contains("token")
            {
                mapped = .auth
            } else {
                mapped = .invalidRequest
            }
        case 12: mapped = .invalidRequest
        default: mapped = .other
        }
        return StoreError(mapped, "etcd: \(message)", endpoint: endpoint, remoteCode: code)
    }

    static func transport(_ failure: TransportFailure, endpoint: String, idempotent: Bool) -> StoreError {
        let code: Code
        var message = failure.description
        switch failure.kind {
        case .connect: code = .unavailable
        case .timeout: code = .timeout
        case .tls: code = .tls
        case .connectionLost: code = .unavailable
        case .malformed: code = .malformedReply
        case .aborted: code = .other
        case .overloaded: code = .overloaded
        case .other: code = .unavailable
        }
        if failure.requestSent, !idempotent, failure.kind == .timeout || failure.kind == .connectionLost {
            message += "; the write may or may not have been applied: re-read before retrying"
        }
        return StoreError(code, message, endpoint: endpoint)
    }

    static func malformed(_ error: WireError, endpoint: String?) -> StoreError {
        StoreError(.malformedReply, error.message, endpoint: endpoint)
    }

    /// etcd rejected the auth token (expired, or issued by a member that forgot it): worth one
    /// re-authentication.
    var isTokenRejected: Bool {
        guard code == .auth else { return false }
        return remoteCode == 16 || message.contains("invalid auth token")
    }
}
