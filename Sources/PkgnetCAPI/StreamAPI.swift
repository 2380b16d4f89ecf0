// The C API of include/pkgnet.h, part 3: per-camera streams.
import PkgnetCore
import PkgnetKernels
import Synchronization

/// A pkgnet_stream handle: the stream, its model handle (kept alive) and the
/// last step's results, which the reading functions copy out. The results
/// sit behind a mutex so that a read racing a push on another thread gets
/// one step or the other, never half of one.
final class StreamHandle {
    let stream: PkgnetCore.Stream
    let model: ModelHandle
    let lastStep = Mutex(StreamStep())

    init(_ stream: PkgnetCore.Stream, _ model: ModelHandle) {
        self.stream = stream
        self.model = model
    }
}

func streamHandle(_ pointer: OpaquePointer?) -> StreamHandle? {
    pointer.map { Unmanaged<StreamHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

@_cdecl("pkgnet_stream_options_init")
public func pkgnetStreamOptionsInit(_ options: UnsafeMutablePointer<pkgnet_stream_options>?) {
    guard let options else { return }
    var defaults = pkgnet_stream_options()
    defaults.causal = -1
    options.pointee = defaults
}

@_cdecl("pkgnet_stream_create")
public func pkgnetStreamCreate(_ model: OpaquePointer?, _ options: UnsafePointer<pkgnet_stream_options>?,
                               _ stream: UnsafeMutablePointer<OpaquePointer?>?) -> pkgnet_status {
    let function = "pkgnet_stream_create"
    guard let stream else { return fail(.invalidArgument, "\(function): stream (the output pointer) is NULL") }
    stream.pointee = nil
    guard let handle = modelHandle(model) else { return fail(.invalidArgument, "\(function): model is NULL") }
    return guarded {
        var settings = pkgnet_stream_options()
        pkgnetStreamOptionsInit(&settings)
        if let options { settings = options.pointee }
        let config = handle.model.config
        let scene = settings.scene == nil ? config.sceneSettings : try sceneSettings(settings.scene, function)
        var scoring = config.frame
        if settings.top_k != 0 { scoring.topK = Int(settings.top_k) }
        if settings.median_window != 0 { scoring.medianWindow = Int(settings.median_window) }
        switch settings.causal {
        case -1: break
        case 0, 1: scoring.causal = settings.causal == 1
        default: throw PkgnetError(.invalidArgument, "\(function): causal must be -1, 0 or 1, not \(settings.causal)")
        }
        if settings.has_empty_floor != 0 { scoring.emptyFloor = settings.empty_floor }
        do {
            try scoring.validate(function)
        } catch let error as PkgnetError {
            throw PkgnetError(.invalidArgument, error.message)
        }
        let created = try PkgnetCore.Stream(model: handle.model, scene: scene, scoring: scoring,
                                            useMotion: settings.use_motion != 0, threads: Int(settings.threads))
        stream.pointee = OpaquePointer(Unmanaged.passRetained(StreamHandle(created, handle)).toOpaque())
    }
}

@_cdecl("pkgnet_stream_free")
public func pkgnetStreamFree(_ stream: OpaquePointer?) {
    guard let stream else { return }
    Unmanaged<StreamHandle>.fromOpaque(UnsafeRawPointer(stream)).release()
}

@_cdecl("pkgnet_stream_push")
public func pkgnetStreamPush(_ stream: OpaquePointer?, _ frame: UnsafePointer<pkgnet_frame>?,
                             _ detections: UnsafePointer<pkgnet_detection>?, _ n: Int) -> pkgnet_status {
    let function = "pkgnet_stream_push"
    guard let handle = streamHandle(stream) else { return fail(.invalidArgument, "\(function): stream is NULL") }
    return guarded {
        guard let frame else { throw PkgnetError(.invalidArgument, "\(function): frame is NULL") }
        let view = try frameView(frame.pointee, "\(function): frame")
        let n = try count(n, "\(function): n")
        if n > 0 && detections == nil { throw PkgnetError(.invalidArgument, "\(function): detections is NULL but n is \(n)") }
        let list = (0..<n).map { i in
            let d = detections![i]
            return Detection(box: Box(x1: d.box.x1, y1: d.box.y1, x2: d.box.x2, y2: d.box.y2), confidence: d.confidence)
        }
        let step = try handle.stream.push(view, detections: list)
        handle.lastStep.withLock { $0 = step }
    }
}

@_cdecl("pkgnet_stream_finish")
public func pkgnetStreamFinish(_ stream: OpaquePointer?) -> pkgnet_status {
    guard let handle = streamHandle(stream) else { return fail(.invalidArgument, "pkgnet_stream_finish: stream is NULL") }
    return guarded {
        let step = try handle.stream.finish()
        handle.lastStep.withLock { $0 = step }
    }
}

/// Copies min(available, capacity) results out with `write` and reports the number available.
private func copyOut(_ function: String, _ stream: OpaquePointer?, _ buffer: UnsafeMutableRawPointer?, _ capacity: Int,
                     _ count: UnsafeMutablePointer<Int>?, available: (StreamStep) -> Int,
                     write: (StreamStep, Int) -> Void) -> pkgnet_status {
    guard let handle = streamHandle(stream) else { return fail(.invalidArgument, "\(function): stream is NULL") }
    guard let count else { return fail(.invalidArgument, "\(function): count is NULL") }
    guard capacity >= 0 else { return fail(.invalidArgument, "\(function): capacity \(UInt(bitPattern: capacity)) is too large") }
    guard capacity == 0 || buffer != nil else { return fail(.invalidArgument, "\(function): the buffer is NULL but capacity is \(capacity)") }
    handle.lastStep.withLock { step in
        let n = available(step)
        for i in 0..<min(n, capacity) { write(step, i) }
        count.pointee = n
    }
    return PKGNET_OK
}

@_cdecl("pkgnet_stream_objects")
public func pkgnetStreamObjects(_ stream: OpaquePointer?, _ objects: UnsafeMutablePointer<pkgnet_object_score>?,
                                _ capacity: Int, _ count: UnsafeMutablePointer<Int>?) -> pkgnet_status {
    copyOut("pkgnet_stream_objects", stream, objects.map(UnsafeMutableRawPointer.init), capacity, count,
            available: { $0.objects.count }) { step, i in
        let object = step.objects[i]
        var out = pkgnet_object_score()
        out.frame = Int64(object.frame)
        out.box = pkgnet_box(x1: object.box.x1, y1: object.box.y1, x2: object.box.x2, y2: object.box.y2)
        out.prediction_error = object.predictionError
        withUnsafeMutableBytes(of: &out.inconsistency) { raw in
            let slots = raw.bindMemory(to: Float.self)
            for (j, value) in object.inconsistency.prefix(slots.count).enumerated() { slots[j] = value }
        }
        out.combined = object.combined
        objects![i] = out
    }
}

@_cdecl("pkgnet_stream_frame_scores")
public func pkgnetStreamFrameScores(_ stream: OpaquePointer?, _ scores: UnsafeMutablePointer<pkgnet_frame_score>?,
                                    _ capacity: Int, _ count: UnsafeMutablePointer<Int>?) -> pkgnet_status {
    copyOut("pkgnet_stream_frame_scores", stream, scores.map(UnsafeMutableRawPointer.init), capacity, count,
            available: { $0.frameScores.count }) { step, i in
        let score = step.frameScores[i]
        scores![i] = pkgnet_frame_score(frame: Int64(score.frame), raw: score.raw, smoothed: score.smoothed)
    }
}

@_cdecl("pkgnet_stream_skipped")
public func pkgnetStreamSkipped(_ stream: OpaquePointer?, _ boxes: UnsafeMutablePointer<pkgnet_box>?,
                                _ problems: UnsafeMutablePointer<Int32>?, _ capacity: Int,
                                _ count: UnsafeMutablePointer<Int>?) -> pkgnet_status {
    copyOut("pkgnet_stream_skipped", stream, boxes.map(UnsafeMutableRawPointer.init), capacity, count,
            available: { $0.skipped.count }) { step, i in
        let (box, problem) = step.skipped[i]
        boxes![i] = pkgnet_box(x1: box.x1, y1: box.y1, x2: box.x2, y2: box.y2)
        problems?[i] = problem.rawValue
    }
}
