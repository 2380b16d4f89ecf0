/// The statuses of the C API (`pkgnet_status` in include/pkgnet.h), same values.
public enum Status: Int32, Sendable {
    case ok = 0
    case invalidArgument = 1
    case io = 2
    case format = 3
    case unsupported = 4
    case modelMismatch = 5
    case outOfMemory = 6
    case backend = 7
    case busy = 8
    case `internal` = 9
}

/// Every failure pkgnet reports: a status for programs and a message for people.
/// Messages name the thing at fault (file, tensor, argument) and what was expected.
public struct PkgnetError: Error, CustomStringConvertible, Sendable {
    public let status: Status
    public let message: String

    public init(_ status: Status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }
}
