import FoundationEssentials

/// A teacher on its own: a safetensors file of `teacher.*` tensors (the
/// names a model file gives them) whose metadata key `pkgnet_teacher` holds
/// {"format_version": 1, "arch", "channel_order", "mean", "std"}
/// (docs/model-format.md). A trainer distils a student from it and copies
/// its tensors into the model file it writes.
public final class TeacherFile: @unchecked Sendable {
    public let arch: TeacherArch
    /// What the teacher was trained on: channel order and input mean/std.
    public let normalization: ModelConfig.Teacher
    let network: Teacher
    /// Every teacher.* tensor as stored (full name, shape, fp32 values), in
    /// header order.
    let tensors: [(name: String, shape: [Int], values: [Float])]

    public static let metadataKey = "pkgnet_teacher"

    public init(path: String) throws {
        try PkgnetRuntime.start()
        let mapped = try MappedFile(path, kind: "teacher file")
        let file = try SafeTensors(bytes: mapped.bytes, source: path, mapped: true)
        normalization = try Self.settings(file.metadata, source: path)
        arch = normalization.arch
        let weights = WeightReader(file: file, prefix: "teacher.", source: path)
        network = try Teacher(arch: arch, weights: weights)
        let extra = weights.untaken() + file.names.filter { !$0.hasPrefix("teacher.") }.sorted()
        guard extra.isEmpty else {
            throw PkgnetError(.modelMismatch, "\(path): unexpected tensors \(extra.prefix(5).joined(separator: ", "))\(extra.count > 5 ? " and \(extra.count - 5) more" : "") for a \(arch.rawValue) teacher file (it holds teacher.* tensors only)")
        }
        tensors = file.names.filter { $0.hasPrefix("teacher.") }.map { name in
            let entry = file.entries[name]!
            return (name, entry.shape, file.floats(entry))
        }
        withExtendedLifetime(mapped) {}
    }

    private static func settings(_ metadata: [String: String], source: String) throws -> ModelConfig.Teacher {
        guard let text = metadata[metadataKey] else {
            let hint = metadata["pkgnet"] != nil
                ? "it has a 'pkgnet' entry: this is a model file, not a teacher file"
                : "write one with python -m pkgnet.convert teacher"
            throw PkgnetError(.format, "\(source): no '\(metadataKey)' entry in the safetensors metadata; is this a pkgnet teacher file? (\(hint))")
        }
        let raw: RawTeacherSettings
        do {
            raw = try JSONDecoder().decode(RawTeacherSettings.self, from: Data(text.utf8))
        } catch {
            throw PkgnetError(.format, "\(source): '\(metadataKey)' metadata is not valid: \(SafeTensors.describe(error))")
        }
        let duplicate = Array(text.utf8).withUnsafeBytes { JSONKeys.firstDuplicate(in: $0) }
        if let duplicate {
            throw PkgnetError(.format, "\(source): '\(metadataKey)' metadata: duplicate key '\(duplicate.key)'")
        }
        func bad(_ what: String) -> PkgnetError { PkgnetError(.format, "\(source): '\(metadataKey)' metadata: \(what)") }
        func unsupported(_ what: String) -> PkgnetError { PkgnetError(.unsupported, "\(source): '\(metadataKey)' metadata: \(what)") }
        guard raw.format_version == ModelConfig.formatVersion else {
            throw unsupported("format_version \(raw.format_version) is not supported (this pkgnet reads version \(ModelConfig.formatVersion))")
        }
        return try ModelConfig.teacher(arch: raw.arch, channelOrder: raw.channel_order, mean: raw.mean, std: raw.std, key: "",
                                       bad: bad, unsupported: unsupported)
    }
}

private struct RawTeacherSettings: Decodable {
    let format_version: Int
    let arch: String
    let channel_order: String
    let mean: [Float]
    let std: [Float]
}
