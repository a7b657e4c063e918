import LedgerModel

/// An event as the generator decides it: catalog indices instead of strings, so deciding costs
/// no string copies and the NDJSON writer can emit pre-encoded bytes. `materialize` turns it into
/// the public `Event`; both paths must agree byte for byte (pinned by a test).
struct EventDraft {
    var type: EventType
    var ts: Int64 = 0
    var token: String?
    var tokenType: TokenType?
    /// Index into `SubjectTable`; -1: no subject.
    var subject: Int32 = -1
    /// Index into `Catalog.allClients`; -1: no client.
    var client: Int8 = -1
    /// Whether the client's `iss`, `aud` and `scope` are included (on tokens being created).
    var claims = false
    var exp: Int64?
    var parent: String?
    /// Index into `Catalog.gateways`; -1: none (markers).
    var gateway: Int8 = -1
    var release: Release?
    var track: Track?
    /// Index into `Catalog.routes`; -1: none.
    var route: Int8 = -1
    /// HTTP status; 0: none.
    var status: Int16 = 0
    /// Index into `SubjectTable` whose address the request came from; -1: none;
    /// `EventDraft.attackerAddress`: `Catalog.attackerIP`.
    var clientIP: Int32 = -1
    var requestID: String?
    var reason: Reason?
    /// Index into `WorkloadScenario.markerPlan`; -1: not a marker.
    var marker: Int8 = -1
    /// -1: none.
    var weight: Int8 = -1

    static let attackerAddress: Int32 = -2

    init(type: EventType) { self.type = type }

    func materialize(subjects: inout SubjectTable) -> Event {
        let profile = client >= 0 ? Catalog.allClients[Int(client)] : nil
        let routeEntry = route >= 0 ? Catalog.routes[Int(route)] : nil
        return Event(
            type: type, ts: ts, token: token, tokenType: tokenType?.text,
            sub: subject >= 0 ? subjects.name(Int(subject)) : nil, clientID: profile?.id,
            iss: claims ? profile?.iss : nil, aud: claims ? profile?.aud : nil, scope: claims ? profile?.scope : nil,
            exp: exp, parent: parent, gateway: gateway >= 0 ? Catalog.gateways[Int(gateway)] : nil,
            release: release?.text, track: track?.text, route: routeEntry?.path, method: routeEntry?.method,
            status: status != 0 ? Int(status) : nil,
            clientIP: clientIP >= 0 ? subjects.ip(Int(clientIP)) : clientIP == EventDraft.attackerAddress ? Catalog.attackerIP : nil,
            requestID: requestID, reason: reason?.text,
            marker: marker >= 0 ? WorkloadScenario.markerPlan[Int(marker)].id : nil, weight: weight >= 0 ? Int(weight) : nil)
    }
}
