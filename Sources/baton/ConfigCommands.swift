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
    @Flag(help: "Do not ask for confirmation.") var force = false

    func validate() throws {
        if settings.isEmpty, parameters.isEmpty, apply == nil {
            throw ValidationError("nothing to change: give -s key=value, -p parameter=value or --apply FILE")
        }
        if apply == "-", !force {
            throw ValidationError(
                "--apply - reads the patch from stdin, so it cannot ask for confirmation: add --force")
        }
        do {
            _ = try ConfigEdit.patch(settings: settings, parameters: parameters)
        } catch {
            throw ValidationError(error.description)
        }
    }

    func run() async throws {
        var patch: JSONValue = .object([:])
        if let apply {
            let data: Data
            if apply == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                guard let contents = FileManager.default.contents(atPath: apply) else {
                    throw ValidationError("cannot read --apply \(apply): no such readable file")
                }
                data = contents
            }
            // Invalid UTF-8 is refused, not replaced with U+FFFD and written into the cluster.
            guard let text = String(validating: data, as: UTF8.self) else {
                throw ValidationError(
                    "--apply \(apply == "-" ? "stdin" : apply) is not valid UTF-8: save the patch as UTF-8 and try again"
                )
            }
            do {
                patch = try ConfigEdit.parseDocument(text, source: apply == "-" ? "stdin" : apply)
            } catch {
                throw ValidationError(error.description)
            }
        }
        patch = ConfigEdit.combine(patch, try ConfigEdit.patch(settings: settings, parameters: parameters))

        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        guard let current = view.config else {
            op.fail("the config key does not exist: the cluster has not been bootstrapped yet")
        }
        let proposed = ConfigEdit.proposed(current.value, patch: patch)
        let diff = OperatorFormatting.diff(
            old: OperatorFormatting.yaml(.object(current.value.document)),
            new: OperatorFormatting.yaml(.object(proposed.document)))
        if diff.isEmpty {
            print("no change: the configuration already has these values")
            return
        }
        print(diff)
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
