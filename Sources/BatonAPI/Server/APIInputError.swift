/// A request the API cannot act on, with what is wrong and how to fix it; answered with 400
/// (or the given status) and `{"error": message}`.
public struct APIInputError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public var statusCode: Int

    public init(_ message: String, statusCode: Int = 400) {
        self.message = message
        self.statusCode = statusCode
    }

    public var description: String { message }
}
