import ArgumentParser
import BatonAgent
import BatonCore
import Foundation

struct ShowConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show-config", abstract: "Print the cluster's dynamic configuration (the config key).")

    @OptionGroup var options: ConfigOptions
    @Option(help: "Output format: yaml or json.") var format: String = "yaml"

    func validate() throws {
        guard ["yaml", "json"].contains(format) else { throw ValidationError("--format must be yaml or json") }
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        guard let config = try await op.load().config else {
            op.fail("the config key does not exist: the cluster has not been bootstrapped yet")
        }
        if format == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(config.value), as: UTF8.self))
        } else {
            print(OperatorFormatting.yaml(.object(config.value.document)), terminator: "")
        }
    }
}

struct EditConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edit-config",
        abstract: "Change the cluster's dynamic configuration, after showing the difference.",
        discussion: """
            Values are read as JSON or YAML scalars: 5 is a number, true a boolean, null removes the key, \
            '"5"' a string. Examples:
              baton edit-config -s loop_wait=5 -s postgresql.use_pg_rewind=true
              baton edit-config -p max_connections=200 -p work_mem=16MB
              baton edit-config --apply patch.yml      (a YAML or JSON merge patch; - reads stdin, needs --force)
              baton edit-config --replace config.yml   (the whole configuration; - reads stdin, needs --force)
              baton edit-config                        (edit it in $VISUAL or $EDITOR, vi by default)
            """)

    @OptionGroup var options: ConfigOptions
    @Option(
        name: [.short, .customLong("set")],
        help: ArgumentHelp("Dotted keys nest (postgresql.use_pg_rewind=true).", valueName: "key=value"))
    var settings: [String] = []
    @Option(
        name: [.short, .customLong("pg")],
        help: ArgumentHelp("A PostgreSQL parameter, into postgresql.parameters.", valueName: "param=value"))
    var parameters: [String] = []
    @Option(help: ArgumentHelp("A YAML or JSON merge patch to apply ('-' for stdin).", valueName: "FILE"))
    var apply: String?
    @Option(
        help: ArgumentHelp("A whole configuration (YAML or JSON) to put in place ('-' for stdin).", valueName: "FILE"))
    var replace: String?
    @Flag(name: [.short, .long], help: "Do not show the difference.") var quiet = false
    @Flag(help: "Do not ask for confirmation.") var force = false

    /// No change given on the command line: the configuration is edited in an editor.
    var interactive: Bool { settings.isEmpty && parameters.isEmpty && apply == nil && replace == nil }

    func validate() throws {
        if replace != nil, apply != nil || !settings.isEmpty || !parameters.isEmpty {
            throw ValidationError("--replace takes the whole configuration: give it alone")
        }
        for (flag, file) in [("--apply", apply), ("--replace", replace)] where file == "-" && !force {
            throw ValidationError("\(flag) - reads stdin, so it cannot ask for confirmation: add --force")
        }
        do {
            _ = try ConfigEdit.patch(settings: settings, parameters: parameters)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// A YAML or JSON document from `file` ('-': stdin), for `flag`.
    static func document(_ file: String, flag: String) throws -> JSONValue {
        let data: Data
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let contents = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read \(flag) \(file): no such readable file")
            }
            data = contents
        }
        // Invalid UTF-8 is refused, not replaced with U+FFFD and written into the cluster.
        guard let text = String(validating: data, as: UTF8.self) else {
            throw ValidationError(
                "\(flag) \(file == "-" ? "stdin" : file) is not valid UTF-8: save it as UTF-8 and try again")
        }
        do {
            return try ConfigEdit.parseDocument(text, source: file == "-" ? "stdin" : file)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// The configuration as edited in $VISUAL/$EDITOR (vi), from `current` as YAML; nil when the
    /// editor failed or left it unchanged.
    static func edited(_ current: DynamicConfig, op: OperatorStore) throws -> JSONValue? {
        let environment = ProcessInfo.processInfo.environment
        let chosen = [environment["VISUAL"], environment["EDITOR"]].compactMap { $0 }.first { !$0.isEmpty }
        guard chosen != nil || isatty(0) == 1 else {
            op.fail("nothing to change given (-s, -p, --apply, --replace), and no terminal for an editor")
        }
        let editor = chosen ?? "vi"
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            at: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("config.yaml").path
        let before = OperatorFormatting.yaml(.object(current.document))
        guard
            FileManager.default.createFile(
                atPath: file, contents: Data(before.utf8), attributes: [.posixPermissions: 0o600])
        else { op.fail("cannot write a temporary file in \(directory.path)") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        // The editor may be a command with arguments (`code --wait`), as git and patronictl allow.
        process.arguments = ["-c", "\(editor) \"$0\"", file]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            op.fail("\(editor) exited with status \(process.terminationStatus): nothing changed")
        }
        let after = try document(file, flag: "the edited file")
        return after == (try? ConfigEdit.parseDocument(before, source: "before")) ? nil : after
    }

    func run() async throws {
        // Files are read (and refused) before anything is asked of the cluster.
        let replacement = try replace.map { try Self.document($0, flag: "--replace") }
        let applied = try apply.map { try Self.document($0, flag: "--apply") }
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        guard let current = view.config else {
            op.fail("the config key does not exist: the cluster has not been bootstrapped yet")
        }
        let proposed: DynamicConfig
        if interactive || replace != nil {
            let whole = try replacement ?? Self.edited(current.value, op: op)
            guard let whole else {
                print("no change: the configuration was left as it is")
                return
            }
            guard case .object(let document) = whole else {
                op.fail("the configuration must be a mapping of keys to values (ttl: 30, …)")
            }
            proposed = DynamicConfig(document)
        } else {
            var patch = applied ?? .object([:])
            patch = ConfigEdit.combine(patch, try ConfigEdit.patch(settings: settings, parameters: parameters))
            proposed = ConfigEdit.proposed(current.value, patch: patch)
        }
        let diff = OperatorFormatting.diff(
            old: OperatorFormatting.yaml(.object(current.value.document)),
            new: OperatorFormatting.yaml(.object(proposed.document)))
        if diff.isEmpty {
            print("no change: the configuration already has these values")
            return
        }
        if !quiet { print(diff) }
        let problems = proposed.validationErrors()
        guard problems.isEmpty else {
            op.fail(
                "refusing this configuration:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
                    + "\nfix the values and run edit-config again")
        }
        if !force, !confirm("Apply these changes?") { op.fail("aborted: nothing changed") }
        guard try await op.store.writeConfig(proposed, expected: current.modRevision) else {
            op.fail("the configuration was changed by someone else meanwhile: nothing written; run edit-config again")
        }
        print("configuration changed; the agents apply it within one loop_wait")
    }
}
