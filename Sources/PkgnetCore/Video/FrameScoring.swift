/// How object scores become frame scores (docs/video-pipeline.md): the mean
/// of a frame's top-k object scores, a floor for frames without objects, then
/// a median filter over the video.
public struct FrameScoring: Sendable, Equatable {
    /// Objects averaged per frame; 1 takes the frame's highest object score.
    public var topK: Int
    /// The raw score of a frame in which no object was scored.
    public var emptyFloor: Float
    /// Median filter window in frames: odd, 1 turns smoothing off.
    public var medianWindow: Int
    /// false: scipy.signal.medfilt's centred window, which a stream can only
    /// give half a window late; true: the median of the last `medianWindow`
    /// raw scores, final as soon as the frame is scored.
    public var causal: Bool

    /// Largest window accepted from users: about 55 minutes at 30 fps, and a
    /// bound on the memory a corrupt setting can make a stream allocate.
    public static let maxMedianWindow = 100_001

    public init(topK: Int = 1, emptyFloor: Float = 0, medianWindow: Int = 19, causal: Bool = false) {
        self.topK = topK
        self.emptyFloor = emptyFloor
        self.medianWindow = medianWindow
        self.causal = causal
    }

    /// The problem with these settings, or nil when they are valid. The free
    /// functions below accept anything (documented fallbacks) so they never
    /// trap; whatever takes settings from users checks them here first.
    public var problem: String? {
        if topK < 1 { return "top_k must be at least 1, not \(topK)" }
        if !emptyFloor.isFinite { return "empty_floor must be finite, not \(emptyFloor)" }
        if medianWindow < 1 || medianWindow % 2 == 0 || medianWindow > Self.maxMedianWindow {
            return "median_window must be an odd number in 1...\(Self.maxMedianWindow) (1 = no smoothing), not \(medianWindow)"
        }
        return nil
    }

    /// Throws `.invalidArgument` naming the problem; `context` says whose settings they are.
    public func validate(_ context: String = "frame scoring") throws {
        if let problem { throw PkgnetError(.invalidArgument, "\(context): \(problem)") }
    }
}

/// A frame's raw score: the mean of its `topK` highest object scores, or
/// `emptyFloor` when it has no objects.
///
/// - A frame with fewer objects than `topK` gets the mean of the objects it
///   has (so one object scores the same under every k), not a mean padded
///   with the floor.
/// - `topK` below 1 counts as 1.
/// - A NaN object score ranks above every number, so it reaches the frame
///   score (as NaN) instead of being silently dropped.
public func frameScore(objectScores: [Float], topK: Int, emptyFloor: Float) -> Float {
    guard !objectScores.isEmpty else { return emptyFloor }
    let k = min(max(topK, 1), objectScores.count)
    if k == 1 {
        // The common case needs no copy: a linear scan for the maximum.
        var best = objectScores[0]
        for value in objectScores.dropFirst() where ranksAbove(value, best) { best = value }
        return best
    }
    // A frame holds a handful of objects: sorting a copy is cheaper than any
    // selection structure would be to maintain.
    let top = objectScores.sorted(by: ranksAbove).prefix(k)
    var sum = 0.0
    for value in top { sum += Double(value) }
    return Float(sum / Double(k))
}

/// Descending order with NaN first: a strict weak order even with NaNs.
private func ranksAbove(_ a: Float, _ b: Float) -> Bool {
    if a.isNaN { return !b.isNaN }
    return !b.isNaN && a > b
}

/// scipy.signal.medfilt(scores, window) for a 1-D series: output i is the
/// median of scores[i - window/2 ... i + window/2], positions outside the
/// series counting as 0 (so a window longer than the series still works,
/// the way scipy zero-pads it). Values are selected, not computed, so the
/// result equals scipy's bit for bit on float32 input.
///
/// scipy refuses even windows; so that this never traps, an even window is
/// taken as the next odd one and a window below 1 as 1 (the identity).
/// Callers that take a window from users validate it (`FrameScoring.validate`).
/// Non-finite values are ordered by IEEE totalOrder (NaN above +inf, -NaN
/// below -inf); the
/// scores pkgnet produces are finite.
public func medianFilter(_ scores: [Float], window: Int) -> [Float] {
    var filter = StreamingMedian(window: window, causal: false)
    var out: [Float] = []
    out.reserveCapacity(scores.count)
    for value in scores {
        if let smoothed = filter.push(value) { out.append(smoothed) }
    }
    out += filter.finish()
    return out
}

/// medianFilter one value at a time, for streams.
///
/// Centred (causal false): push(x[t]) returns medianFilter(x)[t - delay]
/// once t >= delay (delay = window / 2), nil before; finish() returns the
/// last min(count, delay) outputs, completing the window with the zero
/// padding scipy uses at the end. Pushing a whole series and then finishing
/// gives exactly medianFilter's outputs, in order.
///
/// Causal (causal true): push(x[t]) returns the median of x[t-window+1 ... t]
/// at once, positions before the start counting as 0; finish() returns nothing.
///
/// finish() also resets the filter, so the next push starts a new series.
/// Window rules as medianFilter (even -> next odd, below 1 -> 1). O(window)
/// per push, O(window) memory.
public struct StreamingMedian: Sendable {
    public let window: Int
    public let causal: Bool
    /// Frames between a value's push and its output: window / 2 centred, 0 causal.
    public var delay: Int { causal ? 0 : window / 2 }
    /// Values pushed since the start (or the last finish).
    public private(set) var count = 0

    /// The window's values in arrival order (a ring) and the same values
    /// sorted, so a push is one removal and one insertion.
    private var arrivals: [Float]
    private var head = 0          // oldest value in `arrivals`
    private var sorted: [Float]

    public init(window: Int, causal: Bool = false) {
        let w = max(window, 1)
        self.window = w % 2 == 0 ? w + 1 : w
        self.causal = causal
        arrivals = []
        sorted = []
        arrivals.reserveCapacity(self.window)
        sorted.reserveCapacity(self.window)
        start()
    }

    /// The zero padding before the series: the delay's worth of zeros centred
    /// (output 0 sees window/2 of them), window - 1 causal.
    private mutating func start() {
        let padding = causal ? window - 1 : window / 2
        arrivals = [Float](repeating: 0, count: padding)
        sorted = arrivals
        head = 0
        count = 0
    }

    public mutating func push(_ x: Float) -> Float? {
        count += 1
        return slide(in: x)
    }

    public mutating func finish() -> [Float] {
        var tail: [Float] = []
        if !causal {
            // The padding after the end: delay zeros complete the last
            // window. For a series shorter than the delay the first ones only
            // fill the window and give nothing; min(count, delay) outputs come out.
            if count > 0 {
                for _ in 0..<delay {
                    if let value = slide(in: 0) { tail.append(value) }
                }
            }
        }
        start()
        return tail
    }

    /// Adds x; drops the oldest value when the window is over-full; returns
    /// the median once the window is full.
    private mutating func slide(in x: Float) -> Float? {
        if arrivals.count < window {
            arrivals.append(x)
        } else {
            let old = arrivals[head]
            arrivals[head] = x
            head = (head + 1) % window
            sorted.remove(at: position(of: old))
        }
        sorted.insert(x, at: position(of: x))
        return sorted.count == window ? sorted[window / 2] : nil
    }

    /// First index whose value is not totally-ordered below x. Under
    /// totalOrder equal means same bits (-0 and +0, NaNs differ), so for a
    /// value in `sorted` this finds that very value.
    private func position(of x: Float) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let mid = (low + high) / 2
            if totallyBelow(sorted[mid], x) { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

private func totallyBelow(_ a: Float, _ b: Float) -> Bool {
    a.isTotallyOrdered(belowOrEqualTo: b) && !b.isTotallyOrdered(belowOrEqualTo: a)
}
