// The C API of include/pkgnet.h, part 4: the built-in darknet detector.
import PkgnetCore
import PkgnetKernels

/// What a pkgnet_detector handle points to.
final class DetectorHandle {
    let detector: Detector

    init(_ detector: Detector) { self.detector = detector }
}

private func detectorHandle(_ pointer: OpaquePointer?) -> DetectorHandle? {
    pointer.map { Unmanaged<DetectorHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

/// Class lists longer than this are refused (a model has at most 100000 classes).
private let maxClassList = 1 << 20

/// A caller's options (NULL = the defaults), validated for `network`.
private func detectorOptions(_ options: UnsafePointer<pkgnet_detector_options>?, for network: DarknetNetwork,
                             _ function: String) throws -> DetectorOptions {
    var result = DetectorOptions()
    if let o = options?.pointee {
        result = DetectorOptions(confidence: o.confidence, nmsThreshold: o.nms_threshold, threads: Int(o.threads))
        let n = try count(o.n_classes, "\(function): options->n_classes")
        if let classes = o.classes {
            guard n <= maxClassList else {
                throw PkgnetError(.invalidArgument, "\(function): options->n_classes = \(n) is more than \(maxClassList)")
            }
            result.classes = (0..<n).map { Int(classes[$0]) }
        } else if n > 0 {
            throw PkgnetError(.invalidArgument, "\(function): options->classes is NULL but n_classes is \(n)")
        }
    }
    do {
        try result.validate(classCount: network.classes)
    } catch let error as PkgnetError {
        throw PkgnetError(error.status, "\(function): \(error.message)")
    }
    return result
}

@_cdecl("pkgnet_detector_options_init")
public func pkgnetDetectorOptionsInit(_ options: UnsafeMutablePointer<pkgnet_detector_options>?) {
    guard let options else { return }
    let defaults = DetectorOptions()
    var result = pkgnet_detector_options()
    result.confidence = defaults.confidence
    result.nms_threshold = defaults.nmsThreshold
    result.threads = Int32(defaults.threads)
    options.pointee = result
}

@_cdecl("pkgnet_detector_load")
public func pkgnetDetectorLoad(_ cfgPath: UnsafePointer<CChar>?, _ weightsPath: UnsafePointer<CChar>?,
                               _ detector: UnsafeMutablePointer<OpaquePointer?>?) -> pkgnet_status {
    let function = "pkgnet_detector_load"
    guard let detector else { return fail(.invalidArgument, "\(function): detector (the output pointer) is NULL") }
    detector.pointee = nil
    return guarded {
        let cfg = try string(cfgPath, "\(function): cfg_path")
        let weights = try string(weightsPath, "\(function): weights_path")
        let handle = DetectorHandle(try Detector(cfgPath: cfg, weightsPath: weights))
        detector.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
    }
}

@_cdecl("pkgnet_detector_free")
public func pkgnetDetectorFree(_ detector: OpaquePointer?) {
    guard let detector else { return }
    Unmanaged<DetectorHandle>.fromOpaque(UnsafeRawPointer(detector)).release()
}

@_cdecl("pkgnet_detector_get_info")
public func pkgnetDetectorGetInfo(_ detector: OpaquePointer?, _ info: UnsafeMutablePointer<pkgnet_detector_info>?) -> pkgnet_status {
    guard let handle = detectorHandle(detector) else { return fail(.invalidArgument, "pkgnet_detector_get_info: detector is NULL") }
    guard let info else { return fail(.invalidArgument, "pkgnet_detector_get_info: info is NULL") }
    let network = handle.detector.network
    var result = pkgnet_detector_info()
    result.input_width = Int32(network.input.width)
    result.input_height = Int32(network.input.height)
    result.classes = Int32(network.classes)
    result.heads = Int32(network.heads.count)
    result.layers = Int32(network.layerCount)
    result.parameters = network.parameterCount
    info.pointee = result
    return PKGNET_OK
}

@_cdecl("pkgnet_detector_detect")
public func pkgnetDetectorDetect(_ detector: OpaquePointer?, _ frame: UnsafePointer<pkgnet_frame>?,
                                 _ options: UnsafePointer<pkgnet_detector_options>?,
                                 _ objects: UnsafeMutablePointer<pkgnet_detected_object>?, _ capacity: Int,
                                 _ found: UnsafeMutablePointer<Int>?) -> pkgnet_status {
    let function = "pkgnet_detector_detect"
    guard let handle = detectorHandle(detector) else { return fail(.invalidArgument, "\(function): detector is NULL") }
    return guarded {
        guard let found else { throw PkgnetError(.invalidArgument, "\(function): count is NULL") }
        found.pointee = 0
        guard let frame else { throw PkgnetError(.invalidArgument, "\(function): frame is NULL") }
        let view = try frameView(frame.pointee, "\(function): frame")
        let capacity = try count(capacity, "\(function): capacity")
        if capacity > 0 && objects == nil { throw PkgnetError(.invalidArgument, "\(function): objects is NULL but capacity is \(capacity)") }
        let settings = try detectorOptions(options, for: handle.detector.network, function)
        let result = try handle.detector.detect(view, options: settings)
        for (i, object) in result.prefix(capacity).enumerated() {
            objects![i] = pkgnet_detected_object(
                box: pkgnet_box(x1: object.box.x1, y1: object.box.y1, x2: object.box.x2, y2: object.box.y2),
                confidence: object.confidence, class_id: Int32(object.classID))
        }
        found.pointee = result.count
    }
}

@_cdecl("pkgnet_detector_raw_output")
public func pkgnetDetectorRawOutput(_ detector: OpaquePointer?, _ frame: UnsafePointer<pkgnet_frame>?, _ head: Int32,
                                    _ threads: Int32, _ outputs: UnsafeMutablePointer<Float>?, _ capacity: Int,
                                    _ found: UnsafeMutablePointer<Int>?, _ shape: UnsafeMutablePointer<Int32>?) -> pkgnet_status {
    let function = "pkgnet_detector_raw_output"
    guard let handle = detectorHandle(detector) else { return fail(.invalidArgument, "\(function): detector is NULL") }
    return guarded {
        guard let found else { throw PkgnetError(.invalidArgument, "\(function): count is NULL") }
        guard let shape else { throw PkgnetError(.invalidArgument, "\(function): shape is NULL") }
        found.pointee = 0
        guard let frame else { throw PkgnetError(.invalidArgument, "\(function): frame is NULL") }
        let view = try frameView(frame.pointee, "\(function): frame")
        let capacity = try count(capacity, "\(function): capacity")
        if capacity > 0 && outputs == nil { throw PkgnetError(.invalidArgument, "\(function): outputs is NULL but capacity is \(capacity)") }
        let values: [Float]
        do {
            values = try handle.detector.rawOutput(view, head: Int(head), threads: Int(threads))
        } catch let error as PkgnetError where error.status == .invalidArgument {
            throw PkgnetError(error.status, "\(function): \(error.message)")
        }
        let headShape = handle.detector.network.headShapes[Int(head)]
        shape[0] = Int32(headShape.channels)
        shape[1] = Int32(headShape.height)
        shape[2] = Int32(headShape.width)
        if let outputs {
            for (i, value) in values.prefix(capacity).enumerated() { outputs[i] = value }
        }
        found.pointee = values.count
    }
}

@_cdecl("pkgnet_stream_set_detector")
public func pkgnetStreamSetDetector(_ stream: OpaquePointer?, _ detector: OpaquePointer?,
                                    _ options: UnsafePointer<pkgnet_detector_options>?) -> pkgnet_status {
    let function = "pkgnet_stream_set_detector"
    guard let handle = streamHandle(stream) else { return fail(.invalidArgument, "\(function): stream is NULL") }
    return guarded {
        guard let source = detectorHandle(detector) else {
            try handle.stream.setDetector(nil)
            return
        }
        let network = source.detector.network
        let settings = try detectorOptions(options, for: network, function)
        // Its own scratch: the stream runs it from its pushes, on their thread.
        try handle.stream.setDetector(try Detector(network: network), options: settings)
    }
}
