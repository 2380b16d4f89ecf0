// libFuzzer target for the model loader: safetensors header length, header
// JSON, metadata, tensor table (names, dtypes, shapes, offsets), the
// `pkgnet` config, and the network builders that consume the tensors.
//
// Built by scripts/fuzz.sh together with the PkgnetCore sources as one module
// (so internal types such as SafeTensors are reachable) and with Swift's
// runtime checks ON (-O, not the release build's -Ounchecked): an overflow or
// out-of-range index that user input can reach must show up here as a trap,
// because in the shipped library it would be silent undefined behaviour.
//
// Contract under test: any input either loads or throws a PkgnetError with a
// non-empty message. Anything else (trap, ASan report, another error type
// escaping, hang) is a finding.
import PkgnetKernels

/// Tensors are converted to fp32 after table validation; cap what one input
/// may make us convert so a header claiming huge (but consistent) tensors
/// cannot turn a fuzz iteration into a slow one. The loader itself has no
/// such cap, and needs none: every byte it converts exists in the input.
private let conversionBudget = 1 << 20

@_cdecl("LLVMFuzzerTestOneInput")
public func loaderFuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: size > 0 ? data : nil, count: size)

    // Table level: whatever the parser accepts must be readable in bounds,
    // whatever its dtype (Model only reads the tensors a network asks for).
    if let file = try? SafeTensors(bytes: bytes, source: "fuzz") {
        var budget = conversionBudget
        for entry in file.entries.values where entry.count <= budget {
            budget -= entry.count
            let values = file.floats(entry)
            if values.count != entry.count { fatalError("floats(\(entry.name)) gave \(values.count) values, shape says \(entry.count)") }
        }
    }

    // The whole loader, as pkgnet_model_load_from_memory calls it.
    do {
        _ = try Model(bytes: bytes, source: "fuzz")
    } catch let error as PkgnetError {
        if error.message.isEmpty { fatalError("PkgnetError \(error.status) with an empty message") }
    } catch {
        // The C API would map this to PKGNET_ERR_INTERNAL: a bug, not a verdict on the input.
        fatalError("a non-PkgnetError escaped the loader: \(error)")
    }
    return 0
}
