import BatonTestCluster
import Testing

extension AgentCluster {
    /// Records a test issue with the cluster report attached.
    func fail(_ message: String, sourceLocation: SourceLocation = #_sourceLocation) async {
        Issue.record(Comment(rawValue: "\(message)\n\(await report())"), sourceLocation: sourceLocation)
    }
}
