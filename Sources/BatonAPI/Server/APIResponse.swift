import BatonCore
import Foundation
import Hummingbird

/// Building responses: JSON documents, plain text, and JSON errors `{"error": "..."}`.
enum APIResponse {
    static func json(_ status: HTTPResponse.Status, _ value: JSONValue) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: encode(value)))
    }

    /// JSON with sorted keys: a `JSONValue` or one of BatonCore's shared `Codable` documents.
    static func encode<Document: Encodable>(_ document: Document) -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(document)) ?? Data("{}".utf8)
        return ByteBuffer(bytes: data)
    }

    /// A typed document (one of BatonCore's shared `Codable` documents), with sorted keys.
    static func json<Document: Encodable>(_ status: HTTPResponse.Status, _ document: Document) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: encode(document)))
    }

    static func json(_ status: HTTPResponse.Status, _ object: [String: JSONValue]) -> Response {
        json(status, .object(object))
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(
            status: status, headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// An error in words the caller can act on: what is wrong and how to fix it.
    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json(status, ["error": .string(message)])
    }

    /// The status code alone, for HEAD and OPTIONS health checks.
    static func empty(_ status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentLength: "0"])
    }
}

/// Turns anything a handler or Hummingbird throws (unknown path, wrong method, oversize body)
/// into a JSON error; no request ends in an empty 500.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            return APIResponse.error(error.status, Self.message(for: error, request: request))
        } catch let error as any HTTPResponseError {
            return APIResponse.error(error.status, "\(error.status.code) \(error.status.reasonPhrase)")
        } catch {
            context.logger.error(
                "request failed", metadata: ["api.path": "\(request.uri.path)", "api.error": "\(error)"])
            return APIResponse.error(.internalServerError, "internal error: \(error)")
        }
    }

    static func message(for error: HTTPError, request: Request) -> String {
        if let body = error.body, !body.isEmpty { return body }
        switch error.status {
        case .notFound:
            return "no endpoint \(request.method) \(request.uri.path); see docs/openapi.yaml for the endpoints"
        case .methodNotAllowed:
            return "\(request.uri.path) does not accept \(request.method); see docs/openapi.yaml"
        case .contentTooLarge:
            return "request body too large: the limit is 64 KiB"
        default:
            return "\(error.status.code) \(error.status.reasonPhrase)"
        }
    }
}

/// Adds the configured extra headers (`http_extra_headers`, `https_extra_headers`) to every
/// answer of the router, errors included.
struct ExtraHeadersMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let headers: [(name: HTTPFields.Element.Name, value: String)]

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var response = try await next(request, context)
        for header in headers { response.headers[header.name] = header.value }
        return response
    }
}
