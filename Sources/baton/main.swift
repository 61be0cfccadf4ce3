import ArgumentParser
import BatonCore

/// `baton`: the agent and the operator's command line.
struct Baton: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton",
        abstract: "PostgreSQL high availability through etcd.",
        version: BatonCore.version,
        subcommands: [Version.self]
    )
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print Baton's version.")
    func run() { print("baton \(BatonCore.version)") }
}

Baton.main()
