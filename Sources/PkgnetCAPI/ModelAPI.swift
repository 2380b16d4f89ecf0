// The C API of include/pkgnet.h, part 1: version and errors, models,
// sessions, scoring of object cubes. A thin skin over PkgnetCore: every
// entry point validates its arguments before touching them (a Swift trap
// would take the host process down).
import Glibc
import PkgnetCore
import PkgnetKernels

/// What a pkgnet_model handle points to: the model plus the C strings
/// pkgnet_model_get_info hands out, alive as long as the handle.
final class ModelHandle {
    let model: Model
    let task: UnsafeMutablePointer<CChar>
    let teacher: UnsafeMutablePointer<CChar>
    let channelOrder: UnsafeMutablePointer<CChar>
    let teacherChannelOrder: UnsafeMutablePointer<CChar>

    init(_ model: Model) {
        self.model = model
        task = strdup(model.config.student.task.rawValue)
        teacher = strdup(model.config.teacher.arch.rawValue)
        channelOrder = strdup(model.config.inputChannelOrder.rawValue)
        teacherChannelOrder = strdup(model.config.teacher.channelOrder.rawValue)
    }

    deinit {
        free(task)
        free(teacher)
        free(channelOrder)
        free(teacherChannelOrder)
    }
}

/// A pkgnet_session handle keeps its model handle (and so the model) alive.
final class SessionHandle {
    let session: Session
    let model: ModelHandle

    init(_ session: Session, _ model: ModelHandle) {
        self.session = session
        self.model = model
    }
}

func modelHandle(_ pointer: OpaquePointer?) -> ModelHandle? {
    pointer.map { Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

func sessionHandle(_ pointer: OpaquePointer?) -> SessionHandle? {
    pointer.map { Unmanaged<SessionHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

/// A static string's bytes, which Swift stores NUL-terminated.
private func cString(_ text: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("pkgnet_version")
public func pkgnetVersion() -> UnsafePointer<CChar> {
    cString("0.1.0")
}

/// Built once (Swift globals initialise thread-safely); lives for the process.
nonisolated(unsafe) private let systemInfoString: UnsafeMutablePointer<CChar> = strdup(PkgnetRuntime.systemInfo)

@_cdecl("pkgnet_system_info")
public func pkgnetSystemInfo() -> UnsafePointer<CChar> {
    UnsafePointer(systemInfoString)
}

@_cdecl("pkgnet_status_name")
public func pkgnetStatusName(_ status: pkgnet_status) -> UnsafePointer<CChar> {
    switch Status(rawValue: Int32(truncatingIfNeeded: status.rawValue)) {
    case .ok: return cString("PKGNET_OK")
    case .invalidArgument: return cString("PKGNET_ERR_INVALID_ARGUMENT")
    case .io: return cString("PKGNET_ERR_IO")
    case .format: return cString("PKGNET_ERR_FORMAT")
    case .unsupported: return cString("PKGNET_ERR_UNSUPPORTED")
    case .modelMismatch: return cString("PKGNET_ERR_MODEL_MISMATCH")
    case .outOfMemory: return cString("PKGNET_ERR_OUT_OF_MEMORY")
    case .backend: return cString("PKGNET_ERR_BACKEND")
    case .busy: return cString("PKGNET_ERR_BUSY")
    case .internal: return cString("PKGNET_ERR_INTERNAL")
    case nil: return cString("PKGNET_ERR_UNKNOWN")
    }
}

@_cdecl("pkgnet_last_error")
public func pkgnetLastError() -> UnsafePointer<CChar> {
    pkk_last_error()
}

@_cdecl("pkgnet_model_load")
public func pkgnetModelLoad(_ path: UnsafePointer<CChar>?, _ model: UnsafeMutablePointer<OpaquePointer?>?) -> pkgnet_status {
    guard let model else { return fail(.invalidArgument, "pkgnet_model_load: model (the output pointer) is NULL") }
    model.pointee = nil
    guard let path else { return fail(.invalidArgument, "pkgnet_model_load: path is NULL") }
    return guarded {
        let handle = ModelHandle(try Model(path: String(cString: path)))
        model.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
    }
}

@_cdecl("pkgnet_model_load_from_memory")
public func pkgnetModelLoadFromMemory(_ data: UnsafeRawPointer?, _ size: Int, _ model: UnsafeMutablePointer<OpaquePointer?>?) -> pkgnet_status {
    guard let model else { return fail(.invalidArgument, "pkgnet_model_load_from_memory: model (the output pointer) is NULL") }
    model.pointee = nil
    guard let data else { return fail(.invalidArgument, "pkgnet_model_load_from_memory: data is NULL") }
    guard size >= 0 else { return fail(.invalidArgument, "pkgnet_model_load_from_memory: size \(UInt(bitPattern: size)) is too large") }
    return guarded {
        let handle = ModelHandle(try Model(bytes: UnsafeRawBufferPointer(start: data, count: size)))
        model.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
    }
}

@_cdecl("pkgnet_model_free")
public func pkgnetModelFree(_ model: OpaquePointer?) {
    guard let model else { return }
    Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer(model)).release()
}

@_cdecl("pkgnet_model_get_info")
public func pkgnetModelGetInfo(_ model: OpaquePointer?, _ info: UnsafeMutablePointer<pkgnet_model_info>?) -> pkgnet_status {
    guard let handle = modelHandle(model) else { return fail(.invalidArgument, "pkgnet_model_get_info: model is NULL") }
    guard let info else { return fail(.invalidArgument, "pkgnet_model_get_info: info is NULL") }
    let config = handle.model.config
    var result = pkgnet_model_info()
    result.k = Int32(config.student.k)
    result.width = Int32(config.student.width)
    result.channels = Int32(config.student.channels)
    result.input_frames = Int32(config.student.inputFrames)
    result.pairs = Int32(config.pairCount)
    let sizes = handle.model.pairSizes.map(Int32.init) + [0, 0, 0, 0]
    result.pair_size = (sizes[0], sizes[1], sizes[2], sizes[3])
    result.task = UnsafePointer(handle.task)
    result.teacher = UnsafePointer(handle.teacher)
    result.channel_order = UnsafePointer(handle.channelOrder)
    result.teacher_channel_order = UnsafePointer(handle.teacherChannelOrder)
    withUnsafeMutableBytes(of: &result.teacher_mean) { copy(config.teacher.mean, into: $0) }
    withUnsafeMutableBytes(of: &result.teacher_std) { copy(config.teacher.std, into: $0) }
    withUnsafeMutableBytes(of: &result.weights) { copy(config.scoring.weights, into: $0) }
    withUnsafeMutableBytes(of: &result.mu) { copy(config.scoring.mu, into: $0) }
    withUnsafeMutableBytes(of: &result.sigma) { copy(config.scoring.sigma, into: $0) }
    info.pointee = result
    return PKGNET_OK
}

/// Copies floats into a C float array field (a homogeneous tuple in Swift).
private func copy(_ values: [Float], into field: UnsafeMutableRawBufferPointer) {
    let slots = field.bindMemory(to: Float.self)
    for (i, value) in values.prefix(slots.count).enumerated() { slots[i] = value }
}

@_cdecl("pkgnet_session_create")
public func pkgnetSessionCreate(_ model: OpaquePointer?, _ threads: Int32, _ session: UnsafeMutablePointer<OpaquePointer?>?) -> pkgnet_status {
    guard let session else { return fail(.invalidArgument, "pkgnet_session_create: session (the output pointer) is NULL") }
    session.pointee = nil
    guard let handle = modelHandle(model) else { return fail(.invalidArgument, "pkgnet_session_create: model is NULL") }
    return guarded {
        let created = SessionHandle(try Session(model: handle.model, threads: Int(threads)), handle)
        session.pointee = OpaquePointer(Unmanaged.passRetained(created).toOpaque())
    }
}

@_cdecl("pkgnet_session_free")
public func pkgnetSessionFree(_ session: OpaquePointer?) {
    guard let session else { return }
    Unmanaged<SessionHandle>.fromOpaque(UnsafeRawPointer(session)).release()
}

@_cdecl("pkgnet_session_set_threads")
public func pkgnetSessionSetThreads(_ session: OpaquePointer?, _ threads: Int32) -> pkgnet_status {
    guard let handle = sessionHandle(session) else { return fail(.invalidArgument, "pkgnet_session_set_threads: session is NULL") }
    return guarded { try handle.session.setThreads(Int(threads)) }
}

@_cdecl("pkgnet_score_u8")
public func pkgnetScoreU8(_ session: OpaquePointer?, _ cubes: UnsafePointer<UInt8>?, _ n: Int, _ size: Int,
                          _ outputs: UnsafeMutablePointer<pkgnet_outputs>?) -> pkgnet_status {
    score("pkgnet_score_u8", session, cubes.map(CubeInput.u8), n, size, "bytes", outputs)
}

@_cdecl("pkgnet_score_f32")
public func pkgnetScoreF32(_ session: OpaquePointer?, _ cubes: UnsafePointer<Float>?, _ n: Int, _ count: Int,
                           _ outputs: UnsafeMutablePointer<pkgnet_outputs>?) -> pkgnet_status {
    score("pkgnet_score_f32", session, cubes.map(CubeInput.f32), n, count, "floats", outputs)
}

/// The checks both scoring entry points share; size_t arrives as Int, so a
/// "negative" value is a size above Int.max.
private func score(_ function: String, _ session: OpaquePointer?, _ input: CubeInput?, _ n: Int, _ size: Int,
                   _ unit: String, _ outputs: UnsafeMutablePointer<pkgnet_outputs>?) -> pkgnet_status {
    guard let handle = sessionHandle(session) else { return fail(.invalidArgument, "\(function): session is NULL") }
    guard let outputs else { return fail(.invalidArgument, "\(function): outputs is NULL") }
    guard n >= 0, let expected = handle.session.inputElements(cubes: n) else {
        return fail(.invalidArgument, "\(function): n = \(UInt(bitPattern: n)) cubes is too many (the input size overflows)")
    }
    guard size == expected else {
        return fail(.invalidArgument, "\(function): \(UInt(bitPattern: size)) \(unit) given for \(n) cubes; they take n*5*32*32*C = \(expected) \(unit) with C = \(handle.model.model.config.student.channels)")
    }
    if n == 0 { return PKGNET_OK }
    guard let input else { return fail(.invalidArgument, "\(function): cubes is NULL") }
    let out = outputs.pointee
    guard out.capacity >= n else {
        return fail(.invalidArgument, "\(function): outputs->capacity is \(out.capacity) but \(n) cubes are scored")
    }
    var sinks = ScoreOutputs()
    sinks.predictionError = out.prediction_error
    sinks.inconsistency = out.inconsistency
    sinks.combined = out.combined
    sinks.prediction = out.prediction
    sinks.errorMap = out.error_map
    let maps = out.inconsistency_map
    sinks.inconsistencyMaps = [maps.0, maps.1, maps.2, maps.3]
    return guarded { try handle.session.score(input, count: n, into: sinks) }
}
