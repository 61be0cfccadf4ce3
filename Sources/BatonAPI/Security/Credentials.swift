import Foundation

/// The expected `Authorization` header for HTTP Basic auth, compared in constant time.
struct Credentials: Sendable {
    private let expected: [UInt8]

    init(username: String, password: String) {
        let token = Data("\(username):\(password)".utf8).base64EncodedString()
        self.expected = Array("Basic \(token)".utf8)
    }

    /// True when `header` carries exactly the configured credentials. The comparison takes the
    /// same time wherever the first difference is, so timing does not reveal the password.
    func accepts(_ header: String?) -> Bool {
        guard let header else { return false }
        let given = Array(header.utf8)
        var difference: UInt8 = given.count == expected.count ? 0 : 1
        for index in expected.indices {
            let byte = index < given.count ? given[index] : 0
            difference |= byte ^ expected[index]
        }
        return difference == 0
    }
}
