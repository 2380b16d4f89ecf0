// What every C entry point shares: errors become a status plus the calling
// thread's message, and a thrown error never escapes as a crash.
import PkgnetCore
import PkgnetKernels

func fail(_ status: Status, _ message: String) -> pkgnet_status {
    pkk_set_error(message)
    return pkgnet_status(rawValue: UInt32(status.rawValue))
}

/// Runs `body`, mapping a thrown PkgnetError (or anything else) to a status.
func guarded(_ body: () throws -> Void) -> pkgnet_status {
    do {
        try body()
        return PKGNET_OK
    } catch let error as PkgnetError {
        return fail(error.status, error.message)
    } catch {
        return fail(.internal, "unexpected error: \(error)")
    }
}

/// A C string argument as Swift, or an invalid-argument error naming it.
func string(_ pointer: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let pointer else { throw PkgnetError(.invalidArgument, "\(what) is NULL") }
    return String(cString: pointer)
}

/// size_t arguments arrive as Int: a "negative" one is a size above Int.max,
/// which no real buffer has.
func count(_ value: Int, _ what: String) throws -> Int {
    guard value >= 0 else { throw PkgnetError(.invalidArgument, "\(what) = \(UInt(bitPattern: value)) is too large") }
    return value
}
