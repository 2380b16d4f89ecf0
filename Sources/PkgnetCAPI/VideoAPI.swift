// The C API of include/pkgnet.h, part 2: frames to object cubes, motion proposals.
import PkgnetCore
import PkgnetKernels

/// A caller's pkgnet_frame as a FrameView, validated (geometry and format).
func frameView(_ frame: pkgnet_frame, _ name: String) throws -> FrameView {
    guard let data = frame.data else { throw PkgnetError(.invalidArgument, "\(name): data is NULL") }
    guard let format = PixelFormat(rawValue: frame.format) else {
        throw PkgnetError(.invalidArgument, "\(name): format \(frame.format) is not a pkgnet_pixel_format (1 grey, 2 bgr, 3 rgb)")
    }
    let view = FrameView(data: data, width: Int(frame.width), height: Int(frame.height),
                         stride: try count(frame.stride, "\(name): stride"), format: format)
    try view.validate(name)
    return view
}

func frameViews(_ frames: UnsafePointer<pkgnet_frame>?, _ n: Int, _ function: String) throws -> [FrameView] {
    guard let frames else { throw PkgnetError(.invalidArgument, "\(function): frames is NULL") }
    return try (0..<n).map { try frameView(frames[$0], "\(function): frames[\($0)]") }
}

func boxes(_ pointer: UnsafePointer<pkgnet_box>?, _ n: Int, _ what: String) throws -> [Box] {
    if n == 0 { return [] }
    guard let pointer else { throw PkgnetError(.invalidArgument, "\(what) is NULL but \(n) boxes are declared") }
    return (0..<n).map { Box(x1: pointer[$0].x1, y1: pointer[$0].y1, x2: pointer[$0].x2, y2: pointer[$0].y2) }
}

@_cdecl("pkgnet_make_cubes")
public func pkgnetMakeCubes(_ frames: UnsafePointer<pkgnet_frame>?, _ boxList: UnsafePointer<pkgnet_box>?, _ n: Int,
                            _ channels: Int32, _ channelOrder: UnsafePointer<CChar>?,
                            _ cubes: UnsafeMutablePointer<UInt8>?, _ size: Int,
                            _ problems: UnsafeMutablePointer<Int32>?) -> pkgnet_status {
    guarded {
        let function = "pkgnet_make_cubes"
        let n = try count(n, "\(function): n")
        let views = try frameViews(frames, 5, function)
        let list = try boxes(boxList, n, "\(function): boxes")
        guard channels == 1 || channels == 3 else {
            throw PkgnetError(.invalidArgument, "\(function): channels must be 1 or 3, not \(channels)")
        }
        let orderName = channelOrder.map { String(cString: $0) } ?? "bgr"
        guard let order = ModelConfig.ChannelOrder(rawValue: orderName) else {
            throw PkgnetError(.invalidArgument, "\(function): channel_order must be \"bgr\" or \"rgb\", not \"\(orderName)\"")
        }
        let (expected, overflow) = n.multipliedReportingOverflow(by: 5 * 32 * 32 * Int(channels))
        guard !overflow, try count(size, "\(function): size") == expected else {
            throw PkgnetError(.invalidArgument, "\(function): size \(UInt(bitPattern: size)) bytes given for \(n) cubes; they take n*5*32*32*\(channels)\(overflow ? ", which overflows" : " = \(expected)")")
        }
        if n == 0 { return }
        guard let cubes else { throw PkgnetError(.invalidArgument, "\(function): cubes is NULL") }
        let found = try makeObjectCubes(frames: views, boxes: list, channels: Int(channels), order: order, into: cubes)
        if let problems {
            for (i, problem) in found.enumerated() { problems[i] = problem.rawValue }
        }
    }
}

@_cdecl("pkgnet_motion_proposals")
public func pkgnetMotionProposals(_ frames: UnsafePointer<pkgnet_frame>?, _ detectorBoxes: UnsafePointer<pkgnet_box>?,
                                  _ nDetector: Int, _ scene: UnsafePointer<CChar>?,
                                  _ proposals: UnsafeMutablePointer<pkgnet_box>?, _ capacity: Int,
                                  _ found: UnsafeMutablePointer<Int>?) -> pkgnet_status {
    guarded {
        let function = "pkgnet_motion_proposals"
        guard let found else { throw PkgnetError(.invalidArgument, "\(function): count is NULL") }
        found.pointee = 0
        let views = try frameViews(frames, 3, function)
        let detector = try boxes(detectorBoxes, try count(nDetector, "\(function): n_detector"), "\(function): detector_boxes")
        let settings = try sceneSettings(scene, function)
        let capacity = try count(capacity, "\(function): capacity")
        if capacity > 0 && proposals == nil { throw PkgnetError(.invalidArgument, "\(function): proposals is NULL but capacity is \(capacity)") }
        let result = try motionProposals(previous: views[0], current: views[1], next: views[2],
                                         detectorBoxes: detector, settings: settings)
        for (i, box) in result.prefix(capacity).enumerated() {
            proposals![i] = pkgnet_box(x1: box.x1, y1: box.y1, x2: box.x2, y2: box.y2)
        }
        found.pointee = result.count
    }
}

/// A scene preset by name (NULL = ped2).
func sceneSettings(_ scene: UnsafePointer<CChar>?, _ function: String) throws -> SceneSettings {
    let name = scene.map { String(cString: $0) } ?? "ped2"
    guard let settings = SceneSettings.preset(named: name) else {
        throw PkgnetError(.invalidArgument, "\(function): scene \"\(name)\" is not one of \(SceneSettings.presetNames.joined(separator: ", "))")
    }
    return settings
}
