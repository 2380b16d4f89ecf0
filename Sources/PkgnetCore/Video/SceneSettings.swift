// Per-dataset thresholds of the object extraction (detector filter and
// motion proposals), with the values of the published pipeline as presets.

/// How objects are found in a scene: which detector boxes to keep and how
/// motion proposals are made. Pixel thresholds assume frames at the dataset's
/// resolution (Ped2 360x240, Avenue 640x360, ShanghaiTech 856x480).
public struct SceneSettings: Equatable, Sendable {
    /// Side of the square Gaussian blur (sigma 0) before frame differencing: 1, 3, 5 or 7.
    public var blurKernel: Int
    /// A pixel moves when |blur(f[t-1]) - blur(f[t])| + |blur(f[t]) - blur(f[t+1])|
    /// exceeds this in some channel (0-255 scale per difference).
    public var motionThreshold: Int
    /// A motion component is proposed when (w+1)(h+1) > minProposalArea
    /// (w, h: its bounding rectangle's width and height in pixels).
    public var minProposalArea: Int
    /// Detector boxes with confidence >= this are kept.
    public var detectorConfidence: Float
    /// Detector boxes with (w+1)(h+1) >= this are kept (w = x2-x1, h = y2-y1).
    public var minDetectorArea: Float
    /// A detector box is dropped when its intersection with a larger box
    /// exceeds this fraction of its own area.
    public var coverThreshold: Float
    /// Pixels detector boxes grow by before their area is cleared from the
    /// motion mask, and proposals grow by.
    public var margin: Int = 2
    /// Proposals need w/h < maxAspect and h/w < maxAspect.
    public var maxAspect: Float = 10

    public init(blurKernel: Int, motionThreshold: Int, minProposalArea: Int, detectorConfidence: Float,
                minDetectorArea: Float, coverThreshold: Float, margin: Int = 2, maxAspect: Float = 10) {
        self.blurKernel = blurKernel
        self.motionThreshold = motionThreshold
        self.minProposalArea = minProposalArea
        self.detectorConfidence = detectorConfidence
        self.minDetectorArea = minDetectorArea
        self.coverThreshold = coverThreshold
        self.margin = margin
        self.maxAspect = maxAspect
    }

    /// UCSD Ped2: 3x3 blur, threshold 18, proposals over 10x10, detections >= 0.5 and 10x10.
    public static let ped2 = SceneSettings(blurKernel: 3, motionThreshold: 18, minProposalArea: 100,
                                           detectorConfidence: 0.5, minDetectorArea: 100, coverThreshold: 0.6)
    /// CUHK Avenue: 5x5 blur, threshold 18, proposals over 40x40, detections >= 0.25 and 40x40.
    public static let avenue = SceneSettings(blurKernel: 5, motionThreshold: 18, minProposalArea: 1600,
                                             detectorConfidence: 0.25, minDetectorArea: 1600, coverThreshold: 0.6)
    /// ShanghaiTech: 5x5 blur, threshold 15, proposals over 40x40, detections >= 0.5 and 8x8.
    public static let shanghaitech = SceneSettings(blurKernel: 5, motionThreshold: 15, minProposalArea: 1600,
                                                   detectorConfidence: 0.5, minDetectorArea: 64, coverThreshold: 0.65)

    /// The preset of a name ("ped2", "avenue", "shanghaitech"; case-insensitive).
    public static func preset(named name: String) -> SceneSettings? {
        switch name.lowercased() {
        case "ped2", "ucsdped2", "ucsd_ped2": return .ped2
        case "avenue": return .avenue
        case "shanghaitech", "shanghai": return .shanghaitech
        default: return nil
        }
    }

    public static let presetNames = ["ped2", "avenue", "shanghaitech"]

    /// Throws `.invalidArgument` naming the first field out of range.
    public func validate() throws {
        func bad(_ text: String) -> PkgnetError { PkgnetError(.invalidArgument, "scene settings: \(text)") }
        guard [1, 3, 5, 7].contains(blurKernel) else { throw bad("blurKernel must be 1, 3, 5 or 7 (got \(blurKernel))") }
        guard (0...509).contains(motionThreshold) else {
            throw bad("motionThreshold must be in 0...509, the range of a sum of two 8-bit differences (got \(motionThreshold))")
        }
        guard minProposalArea >= 0 else { throw bad("minProposalArea must be >= 0 (got \(minProposalArea))") }
        guard detectorConfidence.isFinite else { throw bad("detectorConfidence must be finite (got \(detectorConfidence))") }
        guard minDetectorArea.isFinite, minDetectorArea >= 0 else { throw bad("minDetectorArea must be finite and >= 0 (got \(minDetectorArea))") }
        guard coverThreshold.isFinite, coverThreshold >= 0 else { throw bad("coverThreshold must be finite and >= 0 (got \(coverThreshold))") }
        guard (0...1 << 16).contains(margin) else { throw bad("margin must be in 0...65536 (got \(margin))") }
        guard maxAspect.isFinite, maxAspect > 0 else { throw bad("maxAspect must be finite and positive (got \(maxAspect))") }
    }
}
