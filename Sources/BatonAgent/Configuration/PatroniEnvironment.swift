import Yams

/// Patroni's `PATRONI_*` environment variables, read as Patroni 4.1.5 reads them and laid over the
/// configuration file before it is checked: a variable sets its key as if the file had it, so
/// the same checks apply (a key Baton refuses is refused by name, whether it came from the file
/// or the environment). Patroni's rules: its list of section variables (`PATRONI_RESTAPI_LISTEN`,
/// `PATRONI_LOG_DIR`, …), `PATRONI_POSTGRESQL_BIN_<program>`, the authentication variables
/// (`PATRONI_SUPERUSER_PASSWORD`, `PATRONI_REPLICATION_SSLMODE`, …), and for the stores
/// `PATRONI_<STORE>_<SETTING>` (`PATRONI_ETCD3_HOSTS`); lists and mappings are YAML
/// (`'h1:2379','h2:2379'`, `{X-Frame-Options: DENY}`); empty values are ignored.
enum PatroniEnvironment {
    struct Entry: Equatable {
        /// The variable, for messages.
        let variable: String
        let path: [String]
        let value: Node
    }

    enum Kind { case text, list, mapping, integer, boolean, logFormat }

    static let topLevel = ["name", "namespace", "scope", "thread_pool_size", "thread_stack_size"]
    static let sections: [(String, [(String, Kind)])] = [
        (
            "restapi",
            [
                ("listen", .text), ("connect_address", .text), ("certfile", .text), ("keyfile", .text),
                ("keyfile_password", .text), ("cafile", .text), ("ciphers", .text), ("verify_client", .text),
                ("http_extra_headers", .mapping), ("https_extra_headers", .mapping), ("allowlist", .list),
                ("allowlist_include_members", .boolean), ("request_queue_size", .integer), ("server_tokens", .text),
            ]
        ),
        (
            "ctl",
            [
                ("insecure", .boolean), ("cacert", .text), ("certfile", .text), ("keyfile", .text),
                ("keyfile_password", .text),
            ]
        ),
        (
            "postgresql",
            [
                ("listen", .text), ("connect_address", .text), ("proxy_address", .text), ("config_dir", .text),
                ("data_dir", .text), ("pgpass", .text), ("bin_dir", .text),
            ]
        ),
        (
            "log",
            [
                ("type", .text), ("level", .text), ("traceback_level", .text), ("format", .logFormat),
                ("dateformat", .text), ("static_fields", .mapping), ("max_queue_size", .integer), ("dir", .text),
                ("mode", .integer), ("file_size", .integer), ("file_num", .integer), ("loggers", .mapping),
                ("deduplicate_heartbeat_logs", .boolean),
            ]
        ),
        ("raft", [("data_dir", .text), ("self_addr", .text), ("partner_addrs", .list), ("password", .text)]),
    ]
    static let programs = [
        "pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind",
    ]
    static let authenticationSettings = [
        "username", "password", "sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert", "sslcrl", "sslcrldir",
        "gssencmode", "channel_binding",
    ]
    /// The stores Patroni knows: only their `PATRONI_<STORE>_<SUFFIX>` variables are read (a
    /// Kubernetes service link such as `PATRONI_SERVICE_HOST` is nobody's setting). Other stores
    /// than etcd3 are then refused by name, as in a file.
    static let stores: Set<String> = [
        "ETCD", "ETCD3", "CONSUL", "ZOOKEEPER", "EXHIBITOR", "KUBERNETES", "RAFT", "CITUS",
    ]
    /// Patroni's suffixes of `PATRONI_<STORE>_<SUFFIX>`, with their types.
    static let storeSuffixes: [String: Kind] = {
        var kinds: [String: Kind] = [:]
        for text in [
            "HOST", "PROTOCOL", "SRV", "SRV_SUFFIX", "URL", "PROXY", "CACERT", "CERT", "KEY", "TOKEN", "DC",
            "CONSISTENCY", "SERVICE_CHECK_INTERVAL", "SERVICE_CHECK_TLS_SERVER_NAME", "NAMESPACE", "CONTEXT",
            "SCOPE_LABEL", "ROLE_LABEL", "POD_IP", "KEY_PASSWORD", "DATABASE", "LEADER_LABEL_VALUE",
            "FOLLOWER_LABEL_VALUE", "STANDBY_LEADER_LABEL_VALUE", "TMP_ROLE_LABEL",
        ] { kinds[text] = .text }
        for list in ["HOSTS", "PORTS", "CHECKS", "SERVICE_TAGS", "RETRIABLE_HTTP_CODES"] { kinds[list] = .list }
        for mapping in ["LABELS", "SET_ACLS", "AUTH_DATA", "BOOTSTRAP_LABELS"] { kinds[mapping] = .mapping }
        for flag in ["USE_PROXIES", "REGISTER_SERVICE", "USE_ENDPOINTS", "BYPASS_API_SERVICE", "VERIFY", "USE_SSL"] {
            kinds[flag] = .boolean
        }
        kinds["PORT"] = .integer
        kinds["GROUP"] = .integer
        return kinds
    }()

    /// A variable whose list or mapping does not parse: refused rather than dropped (a lost
    /// allowlist would leave the API open to all).
    struct Unreadable: Error {
        let variable: String
        let kind: Kind
    }

    static func entries(_ environment: [String: String]) throws(Unreadable) -> [Entry] {
        var left = environment.filter { $0.key.hasPrefix("PATRONI_") && !$0.value.isEmpty }
        // Patroni's older names of three log variables; the new name wins.
        for (old, new) in [("LOGLEVEL", "LOG_LEVEL"), ("LOGFORMAT", "LOG_FORMAT"), ("LOG_DATEFMT", "LOG_DATEFORMAT")] {
            if let value = left.removeValue(forKey: "PATRONI_" + old), left["PATRONI_" + new] == nil {
                left["PATRONI_" + new] = value
            }
        }
        var result: [Entry] = []
        var unreadable: Unreadable?
        func take(_ suffix: String, _ path: [String], _ kind: Kind) {
            let variable = "PATRONI_" + suffix
            guard let text = left.removeValue(forKey: variable) else { return }
            guard let node = Self.node(text, kind) else {
                // Patroni drops a number or a boolean it cannot read; a list or mapping is refused.
                if kind == .list || kind == .mapping || kind == .logFormat {
                    unreadable = unreadable ?? Unreadable(variable: variable, kind: kind)
                }
                return
            }
            result.append(Entry(variable: variable, path: path, value: node))
        }
        for key in topLevel { take(key.uppercased(), [key], .text) }
        for (section, keys) in sections {
            for (key, kind) in keys { take("\(section)_\(key)".uppercased(), [section, key], kind) }
        }
        for program in programs {
            take("POSTGRESQL_BIN_" + program.uppercased(), ["postgresql", "bin_name", program], .text)
        }
        for section in ["ctl", "restapi"] {
            for key in ["username", "password"] {
                take("\(section)_\(key)".uppercased(), [section, "authentication", key], .text)
            }
        }
        for user in ["replication", "superuser", "rewind"] {
            for key in authenticationSettings {
                take("\(user)_\(key)".uppercased(), ["postgresql", "authentication", user, key], .text)
            }
        }
        for variable in left.keys.sorted() {
            let rest = variable.dropFirst("PATRONI_".count)
            guard let separator = rest.firstIndex(of: "_") else { continue }
            let store = String(rest[..<separator])
            let suffix = String(rest[rest.index(after: separator)...])
            guard stores.contains(store), let kind = storeSuffixes[suffix] else { continue }
            take(String(rest), [store.lowercased(), suffix.lowercased()], kind)
        }
        for store in Set(result.filter { $0.path.count == 2 && $0.path[0].hasPrefix("etcd") }.map { $0.path[0] }) {
            for key in ["username", "password"] { take("\(store)_\(key)".uppercased(), [store, key], .text) }
        }
        if let unreadable { throw unreadable }
        return result
    }

    /// The value as Patroni parses it: text as text (quoted: a password `null` stays text), lists
    /// and mappings as YAML; nil when it does not parse (Patroni ignores it too).
    static func node(_ text: String, _ kind: Kind) -> Node? {
        func yaml(_ text: String) -> Node? { (try? YAMLText.compose(text)) ?? nil }
        switch kind {
        case .text:
            return .scalar(Node.Scalar(text, Tag(.str), .doubleQuoted))
        case .integer:
            // As Patroni's parse_int: a whole number, or nothing (dropped).
            guard let number = Int(text.trimmed) else { return nil }
            return .scalar(Node.Scalar(String(number), Tag(.int)))
        case .boolean:
            // As Patroni's parse_bool: on/true/yes/1 and off/false/no/0, or nothing (dropped).
            switch text.trimmed.lowercased() {
            case "on", "true", "yes", "1": return .scalar(Node.Scalar("true", Tag(.bool)))
            case "off", "false", "no", "0": return .scalar(Node.Scalar("false", Tag(.bool)))
            default: return nil
            }
        case .list:
            let trimmed = text.trimmed
            return yaml(trimmed.hasPrefix("-") || trimmed.contains("[") ? text : "[\(text)]")?.sequence.map {
                .sequence($0)
            }
        case .mapping:
            return yaml(text.trimmed.hasPrefix("{") ? text : "{\(text)}")?.mapping.map { .mapping($0) }
        case .logFormat:
            // A %-format, or a list of field names.
            if text.contains("%(") { return .scalar(Node.Scalar(text, Tag(.str), .doubleQuoted)) }
            return node(text, .list)
        }
    }

    /// `root` with each entry's key set (sections created as needed; the environment wins).
    static func overlay(_ root: Node?, _ entries: [Entry]) -> Node? {
        guard !entries.isEmpty else { return root }
        var node = root ?? .mapping(Node.Mapping([]))
        for entry in entries { node = set(node, entry.path[...], entry.value) }
        return node
    }

    static func set(_ node: Node, _ path: ArraySlice<String>, _ value: Node) -> Node {
        guard let key = path.first else { return value }
        var pairs = node.mapping.map { Array($0) } ?? []
        if let index = pairs.firstIndex(where: { $0.key.string == key }) {
            pairs[index].value = set(pairs[index].value, path.dropFirst(), value)
        } else {
            pairs.append((Node.scalar(Node.Scalar(key)), set(.mapping(Node.Mapping([])), path.dropFirst(), value)))
        }
        return .mapping(Node.Mapping(pairs, node.mapping?.tag ?? .implicit, node.mapping?.style ?? .any))
    }
}
