import BatonCore

/// The rows of one statement, in PostgreSQL's text format, with typed accessors.
public struct QueryResult: Sendable {
    public var columns: [String]
    public var rows: [Row]
    /// The command tag, e.g. `SELECT 1` or `CREATE ROLE`.
    public var commandTag: String

    public init(columns: [String], rows: [[String?]], commandTag: String) {
        var index: [String: Int] = [:]
        for (position, name) in columns.enumerated() where index[name] == nil { index[name] = position }
        self.columns = columns
        self.rows = rows.map { Row(index: index, values: $0) }
        self.commandTag = commandTag
    }

    /// The only row; throws when there is not exactly one.
    public func single() throws -> Row {
        guard rows.count == 1, let row = rows.first else {
            throw PostgresError(.unexpectedResult, "expected one row, got \(rows.count) (\(commandTag))")
        }
        return row
    }

    /// One row: values by column name, NULL as nil; typed accessors throw on malformed text.
    public struct Row: Sendable {
        let index: [String: Int]
        public let values: [String?]

        /// The raw text of `column`; nil for NULL. Throws for an unknown column.
        public func value(_ column: String) throws -> String? {
            guard let position = index[column], position < values.count else {
                throw PostgresError(.unexpectedResult, "the result has no column '\(column)'")
            }
            return values[position]
        }

        public func string(_ column: String) throws -> String? { try value(column) }

        public func int(_ column: String) throws -> Int? {
            try parse(column, as: "integer") { Int($0) }
        }

        public func int64(_ column: String) throws -> Int64? {
            try parse(column, as: "bigint") { Int64($0) }
        }

        /// PostgreSQL's text booleans `t` / `f`.
        public func bool(_ column: String) throws -> Bool? {
            try parse(column, as: "boolean") { $0 == "t" ? true : $0 == "f" ? false : nil }
        }

        public func lsn(_ column: String) throws -> LSN? {
            try parse(column, as: "pg_lsn") { LSN(text: $0) }
        }

        private func parse<T>(_ column: String, as type: String, _ convert: (String) -> T?) throws -> T? {
            guard let text = try value(column) else { return nil }
            guard let parsed = convert(text) else {
                throw PostgresError(
                    .unexpectedResult, "column '\(column)' holds '\(text)', which is not a valid \(type)")
            }
            return parsed
        }
    }
}
