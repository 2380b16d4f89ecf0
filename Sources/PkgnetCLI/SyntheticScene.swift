// A synthetic surveillance scene: a fixed camera over a paved walkway where
// figures walk left, right or diagonally, and, in the test part only,
// objects that move or look wrong. It is the default data of pkgnet's
// train-then-evaluate job: small enough to generate in seconds and to learn
// on a CPU, with anomalies that show inside a 32x32 object crop.
//
// Everything follows from one seed through SceneRandom and arithmetic that
// IEEE 754 defines exactly (+, -, *, /, sqrt, rounding). libm's sin and log
// are avoided: their last bits differ between C libraries, and a flipped
// bit can flip a pixel, so one seed gives the same pixels, boxes and labels
// on every machine.
import PkgnetCore

/// The scene's random streams over the engine's SplitMix64 (SeededRandom).
struct SceneRandom {
    private var base: SeededRandom

    init(seed: UInt64) { base = SeededRandom(seed: seed) }

    /// An independent stream for a part of the scene (a clip, a frame's
    /// noise): hashing the keys in, so one stream's draws never depend on
    /// how many others were drawn or how many clips were asked for.
    init(seed: UInt64, keys: UInt64...) {
        var mixer = SceneRandom(seed: seed)
        for key in keys {
            mixer = SceneRandom(seed: mixer.next() ^ (key &* 0xD1B5_4A32_D192_ED03))
        }
        base = SeededRandom(seed: mixer.next())
    }

    mutating func next() -> UInt64 { base.next() }

    /// Uniform in [0, 1), 53 random bits.
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    mutating func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * unit() }

    /// Uniform in 0..<count (the modulo bias is below 2^-58 for the small counts used).
    mutating func below(_ count: Int) -> Int { Int(next() % UInt64(count)) }

    mutating func chance(_ probability: Double) -> Bool { unit() < probability }

    /// -1 or +1.
    mutating func sign() -> Double { next() & 1 == 0 ? -1 : 1 }
}

/// sin(x) from arithmetic only: range reduction, then the Taylor series to
/// x^11 on [-pi/2, pi/2] (error below 6e-8, far under a grey level).
func portableSine(_ x: Double) -> Double {
    let twoPi = 2 * Double.pi
    var r = x - (x / twoPi).rounded() * twoPi
    if r > Double.pi / 2 { r = Double.pi - r } else if r < -Double.pi / 2 { r = -Double.pi - r }
    let r2 = r * r
    return r * (1 - r2 / 6 * (1 - r2 / 20 * (1 - r2 / 42 * (1 - r2 / 72 * (1 - r2 / 110)))))
}

/// The camera: frame size, walkway, perspective and the walking pace.
enum SceneGeometry {
    static let width = 240
    static let height = 160
    /// Bottom row of the building facade behind the walkway.
    static let facadeBottom = 34.0
    /// Feet stay between these rows: the far and the near edge of the walkway.
    static let walkTop = 54.0
    static let walkBottom = 152.0
    /// A standing person's height in pixels at the near edge.
    static let personHeight = 40.0
    /// Walking pace at the near edge, pixels per frame.
    static let walkSpeed = 1.2

    /// Sizes and speeds scale linearly with the foot row: half size at the
    /// far edge of the walkway, full size at the near edge.
    static func scale(_ footRow: Double) -> Double {
        0.5 + 0.5 * (footRow - walkTop) / (walkBottom - walkTop)
    }
}

/// What makes an object anomalous: its shape and speed (cyclist, cart), or
/// the way a walker moves for a while (runner, jumper, erratic).
enum Anomaly: String, CaseIterable, Sendable {
    /// A rider on a bicycle crossing at 4-5.5 walking paces.
    case cyclist
    /// A wide checkered box on wheels crossing at 3.5-5 walking paces.
    case cart
    /// A walker breaking into a sprint: 3-4 paces, long fast strides, leaning forward.
    case runner
    /// A walker jumping up and down with arms raised and legs spread.
    case jumper
    /// A walker darting in a new random direction every few frames, 3-4 paces.
    case erratic

    /// Cyclists and carts enter at a frame edge and are anomalous until they
    /// leave; the others are walkers who misbehave for an episode.
    var crossesScene: Bool { self == .cyclist || self == .cart }
}

/// An axis-aligned extent in pixel coordinates (x right, y down; pixel (i, j)
/// covers [i, i+1) x [j, j+1)).
struct Extent: Equatable {
    var x1, y1, x2, y2: Double

    var width: Double { x2 - x1 }
    var height: Double { y2 - y1 }
    var centreX: Double { (x1 + x2) / 2 }
    var centreY: Double { (y1 + y2) / 2 }

    func union(_ other: Extent) -> Extent {
        Extent(x1: min(x1, other.x1), y1: min(y1, other.y1), x2: max(x2, other.x2), y2: max(y2, other.y2))
    }

    func clipped(width: Double, height: Double) -> Extent {
        Extent(x1: max(x1, 0), y1: max(y1, 0), x2: min(x2, width), y2: min(y2, height))
    }
}

/// A filled primitive of constant grey (a panel may be checkered), drawn
/// with one pixel of anti-aliasing from its signed distance.
enum SceneShape {
    /// All points within `radius` of the segment a-b (a disc when a == b).
    case capsule(ax: Double, ay: Double, bx: Double, by: Double, radius: Double, tone: Double)
    /// A circle's outline: points within `halfWidth` of the circle.
    case ring(cx: Double, cy: Double, radius: Double, halfWidth: Double, tone: Double)
    /// A rectangle, checkered in squares of `cell` pixels of `tone` and `altTone`.
    case panel(x1: Double, y1: Double, x2: Double, y2: Double, cell: Double, tone: Double, altTone: Double)

    static func disc(_ x: Double, _ y: Double, _ radius: Double, _ tone: Double) -> SceneShape {
        .capsule(ax: x, ay: y, bx: x, by: y, radius: radius, tone: tone)
    }

    static func limb(_ a: (Double, Double), _ b: (Double, Double), _ radius: Double, _ tone: Double) -> SceneShape {
        .capsule(ax: a.0, ay: a.1, bx: b.0, by: b.1, radius: radius, tone: tone)
    }

    /// Where the shape is (its distance field's zero set), without anti-aliasing.
    var extent: Extent {
        switch self {
        case let .capsule(ax, ay, bx, by, r, _):
            return Extent(x1: min(ax, bx) - r, y1: min(ay, by) - r, x2: max(ax, bx) + r, y2: max(ay, by) + r)
        case let .ring(cx, cy, r, w, _):
            return Extent(x1: cx - r - w, y1: cy - r - w, x2: cx + r + w, y2: cy + r + w)
        case let .panel(x1, y1, x2, y2, _, _, _):
            return Extent(x1: x1, y1: y1, x2: x2, y2: y2)
        }
    }
}

/// How an object looks for its whole life.
struct Look {
    enum Body { case person, bicycle, cart }
    var body: Body
    /// Height relative to SceneGeometry.personHeight.
    var size: Double
    var head: Double
    var shirt: Double
    var trousers: Double
    /// Bicycle frame or cart handle; the cart's dark squares.
    var accent: Double
    /// The cart's light squares.
    var light: Double

    /// Clothes are dark or light, rarely the walkway's mid grey, so figures
    /// stand out as they do in real scenes.
    static func person(_ random: inout SceneRandom) -> Look {
        Look(body: .person, size: random.uniform(0.85, 1.15),
             head: random.chance(0.6) ? random.uniform(150, 205) : random.uniform(35, 70),
             shirt: random.chance(0.5) ? random.uniform(25, 80) : random.uniform(170, 235),
             trousers: random.chance(0.65) ? random.uniform(20, 75) : random.uniform(165, 210),
             accent: 0, light: 0)
    }
}

/// One object in one frame, as the data set records it.
struct SceneObject {
    let id: Int
    /// Set while the object is anomalous.
    let anomaly: Anomaly?
    /// Where the object is drawn, unclipped.
    let extent: Extent
    /// The extent clipped to the frame: the box a perfect detector reports.
    let box: Extent
    /// Perspective scale at the object's foot row (1 at the walkway's near edge).
    let scale: Double
    let shapes: [SceneShape]
}

struct SceneFrame {
    let index: Int
    /// The visible objects (at least 1 x 1 pixel inside the frame), far to near.
    let objects: [SceneObject]
    /// Label: some visible object is anomalous.
    var anomalous: Bool { objects.contains { $0.anomaly != nil } }
}

enum ScenePart: String, CaseIterable {
    case training, testing

    var key: UInt64 { self == .training ? 1 : 2 }
}

struct SceneClip {
    let part: ScenePart
    let index: Int
    let frames: [SceneFrame]
    /// Seed of the per-frame sensor noise.
    let noiseSeed: UInt64
    /// The anomalous episodes that happened, in order.
    let episodes: [Anomaly]
}

struct SyntheticSceneConfig: Equatable {
    /// Its 4 test clips show all five kinds of anomaly.
    static let defaultSeed: UInt64 = 11

    var seed = SyntheticSceneConfig.defaultSeed
    var trainClips = 6
    var testClips = 4
    var frames = 120

    func clips(_ part: ScenePart) -> Int { part == .training ? trainClips : testClips }
}

/// The scene of one seed: its background, its clips and their frames.
struct SyntheticScene {
    let config: SyntheticSceneConfig
    /// Grey levels of the empty scene, row-major, width x height.
    let background: [Float]

    init(config: SyntheticSceneConfig) {
        self.config = config
        var random = SceneRandom(seed: config.seed, keys: 0)
        background = renderBackground(&random)
    }

    /// Simulates clip `index` (0-based) of a part: training clips hold
    /// walkers only, test clips also anomalous episodes.
    func clip(_ part: ScenePart, _ index: Int) -> SceneClip {
        var random = SceneRandom(seed: config.seed, keys: part.key, UInt64(index))
        let noiseSeed = random.next()
        var simulation = ClipSimulation(frames: config.frames, random: random)
        if part == .testing {
            var kindRandom = SceneRandom(seed: config.seed, keys: 3)
            var kinds = Anomaly.allCases
            for i in stride(from: kinds.count - 1, to: 0, by: -1) { kinds.swapAt(i, kindRandom.below(i + 1)) }
            // Two episodes a clip on average: consecutive clips start two
            // kinds further on, so a few clips show every kind.
            simulation.scheduleEpisodes(kinds: kinds, first: 2 * index)
        }
        let frames = (0..<config.frames).map { simulation.step($0) }
        return SceneClip(part: part, index: index, frames: frames, noiseSeed: noiseSeed, episodes: simulation.episodesShown)
    }

    /// The frame's pixels: background, objects far to near, sensor noise;
    /// grey repeated in 3 channels, rows packed (width * 3 bytes).
    func render(_ frame: SceneFrame, of clip: SceneClip) -> [UInt8] {
        let width = SceneGeometry.width, height = SceneGeometry.height
        var canvas = background
        canvas.withUnsafeMutableBufferPointer { pixels in
            for object in frame.objects {
                for shape in object.shapes { rasterise(shape, into: pixels, width: width, height: height) }
            }
        }
        var noise = SceneRandom(seed: clip.noiseSeed, keys: UInt64(frame.index))
        var out = [UInt8](repeating: 0, count: width * height * 3)
        canvas.withUnsafeBufferPointer { pixels in
            out.withUnsafeMutableBufferPointer { bytes in
                // Triangular noise in (-4, 4) grey levels (sd 1.6): each draw
                // feeds two pixels (the pixel count is even: the width is).
                let spread: Float = 4 / 65536
                var i = 0
                while i < pixels.count {
                    let bits = noise.next()
                    for half in 0..<2 {
                        let b = bits >> (32 &* UInt64(half))
                        let n = (Float(b & 0xFFFF) + Float((b >> 16) & 0xFFFF)) * spread - 4
                        let v = UInt8(min(max(pixels[i] + n, 0), 255).rounded())
                        let o = i &* 3
                        bytes[o] = v; bytes[o &+ 1] = v; bytes[o &+ 2] = v
                        i &+= 1
                    }
                }
            }
        }
        return out
    }
}

// MARK: - Simulation

/// A moving object and its state between frames.
private struct Mover {
    let id: Int
    let look: Look
    /// Foot point (bottom centre), pixels.
    var x: Double
    var y: Double
    /// +1 moving right, -1 left.
    var heading: Double
    /// Rows per column of travel (0: straight across).
    var slope: Double
    /// Speed in walking paces (SceneGeometry.walkSpeed at scale 1).
    var pace: Double
    var walkingPace: Double
    /// Gait or pedal angle, radians.
    var phase: Double
    var anomaly: Anomaly?
    /// First frame after a walker's episode.
    var anomalyEnd = Int.max
    /// Erratic darts: velocity at scale 1 and frames until the next change.
    var dartX = 0.0, dartY = 0.0, dartFrames = 0
    /// Jumps: frames since the episode began, frames per jump, height relative to the figure.
    var jumpClock = 0, jumpPeriod = 12, jumpHeight = 0.0
    /// Has been visible; frames in a row it was not.
    var seen = false
    var hiddenFrames = 0

    var scale: Double { SceneGeometry.scale(y) }
    var figureHeight: Double { SceneGeometry.personHeight * scale * look.size }

    mutating func endEpisode() {
        if anomaly == .erratic { heading = dartX < 0 ? -1 : 1 }
        anomaly = nil
        anomalyEnd = Int.max
        pace = walkingPace
    }

    /// Moves one frame on; erratic darts draw from `random`.
    mutating func advance(_ random: inout SceneRandom) {
        let scale = self.scale
        var dx: Double, dy: Double
        if anomaly == .erratic {
            if dartFrames == 0 {
                let speed = SceneGeometry.walkSpeed * random.uniform(3, 4)
                let ax = random.sign() * random.uniform(0.2, 1), ay = random.uniform(-0.8, 0.8)
                let norm = (ax * ax + ay * ay).squareRoot()
                dartX = speed * ax / norm
                dartY = speed * ay / norm
                dartFrames = 3 + random.below(3)
            }
            dartFrames -= 1
            dx = dartX * scale
            dy = dartY * scale
            heading = dx < 0 ? -1 : 1
        } else {
            dx = heading * SceneGeometry.walkSpeed * pace * scale
            dy = abs(dx) * slope
        }
        x += dx
        y += dy
        // The walkway's edges turn walkers back.
        if y < SceneGeometry.walkTop {
            y = 2 * SceneGeometry.walkTop - y
            slope = -slope
            dartY = -dartY
        } else if y > SceneGeometry.walkBottom {
            y = 2 * SceneGeometry.walkBottom - y
            slope = -slope
            dartY = -dartY
        }
        let travelled = (dx * dx + dy * dy).squareRoot()
        let h = SceneGeometry.personHeight * scale * look.size
        switch look.body {
        case .person:
            // One gait cycle per stride of 0.85 figure heights (1.1 running).
            phase += 2 * Double.pi * travelled / ((anomaly == .runner ? 1.1 : 0.85) * h)
        case .bicycle:
            phase += travelled / (0.22 * h)
        case .cart:
            break
        }
        if anomaly == .jumper { jumpClock += 1 }
    }
}

/// A planned anomaly: what, from which frame, for how long; crossing
/// objects are planned in full (lane, pace, side) so their duration is known.
private struct Episode {
    let kind: Anomaly
    let start: Int
    let duration: Int
    var lane = 0.0, pace = 0.0, heading = 1.0
    /// Frames per jump (jumper).
    var period = 0
}

private struct ClipSimulation {
    let frames: Int
    var random: SceneRandom
    var movers: [Mover] = []
    var nextID = 0
    /// Walkers the scene aims at, redrawn every `crowdPeriod` frames.
    var crowd: Int
    var pending: [Episode] = []
    var episodesShown: [Anomaly] = []

    static let crowdPeriod = 40
    /// Walkers closer than this (rows) share a lane and overlap as they pass.
    static let laneGap = 10.0

    init(frames: Int, random: SceneRandom) {
        self.frames = frames
        self.random = random
        crowd = 4 + self.random.below(3)
        for _ in 0..<crowd {
            spawnWalker(x: self.random.uniform(15, Double(SceneGeometry.width) - 15))
        }
    }

    /// Plans episodes for 42-55% of the clip's frames (one or two in the
    /// default 120 frames), apart by 10-30 frames. Fewer frames end up
    /// labelled (30-45%): runners and darting walkers may leave the view early.
    mutating func scheduleEpisodes(kinds: [Anomaly], first: Int) {
        let budget = Double(frames) * random.uniform(0.42, 0.55)
        var start = Int(Double(frames) * random.uniform(0.05, 0.2))
        var used = 0
        var k = first
        while true {
            let episode = plan(kinds[k % kinds.count], start: start)
            let shown = min(episode.duration, frames - start)
            if shown < 20 || (used > 0 && Double(used + shown) > budget + 12) { break }
            pending.append(episode)
            used += shown
            start += episode.duration + 10 + random.below(21)
            k += 1
        }
    }

    private mutating func plan(_ kind: Anomaly, start: Int) -> Episode {
        switch kind {
        case .cyclist, .cart:
            // Near lanes (scale 0.8-1) so that the crossing takes 36-60 frames.
            let lane = random.uniform(SceneGeometry.walkTop + 0.6 * (SceneGeometry.walkBottom - SceneGeometry.walkTop), SceneGeometry.walkBottom)
            let scale = SceneGeometry.scale(lane)
            let paces = kind == .cyclist ? (4.0, 5.5) : (3.5, 5.0)
            let distance = Double(SceneGeometry.width) + 2 * crossingHalfWidth(kind, scale: scale)
            let wanted = random.uniform(36, 50)
            let pace = min(max(distance / (wanted * SceneGeometry.walkSpeed * scale), paces.0), paces.1)
            let duration = Int((distance / (SceneGeometry.walkSpeed * scale * pace)).rounded(.up))
            return Episode(kind: kind, start: start, duration: duration, lane: lane, pace: pace, heading: random.sign())
        case .runner:
            return Episode(kind: kind, start: start, duration: 20 + random.below(11))
        case .jumper:
            let period = 10 + random.below(5)
            return Episode(kind: kind, start: start, duration: period * (2 + random.below(2)), period: period)
        case .erratic:
            return Episode(kind: kind, start: start, duration: 20 + random.below(15))
        }
    }

    /// Half the widest extent of a crossing object, plus a pixel: it starts just outside the frame.
    private func crossingHalfWidth(_ kind: Anomaly, scale: Double) -> Double {
        let h = SceneGeometry.personHeight * scale * 1.15
        return (kind == .cart ? 0.93 : 0.62) * h + 1
    }

    /// Frame t: episodes begin and end, walkers arrive, the frame is
    /// recorded, then everything moves on.
    mutating func step(_ t: Int) -> SceneFrame {
        for i in movers.indices where movers[i].anomaly != nil && movers[i].anomalyEnd <= t {
            movers[i].endEpisode()
        }
        // One anomaly at a time: a late one waits, and is dropped when too
        // little of the clip is left for it.
        if let next = pending.first, next.start <= t, !movers.contains(where: { $0.anomaly != nil }) {
            if startEpisode(next, at: t) || t > frames - 20 { pending.removeFirst() }
        }
        if t > 0 && t % ClipSimulation.crowdPeriod == 0 { crowd = 4 + random.below(3) }
        if movers.count < 4 || (movers.count < crowd && random.chance(0.06)) {
            let heading = random.sign()
            spawnWalker(x: heading > 0 ? -8 : Double(SceneGeometry.width) + 8, heading: heading)
        }

        // Far to near: nearer figures are drawn over farther ones.
        movers.sort { ($0.y, $0.id) < ($1.y, $1.id) }
        var objects: [SceneObject] = []
        for i in movers.indices {
            let shapes = figure(movers[i])
            let extent = shapes.dropFirst().reduce(shapes[0].extent) { $0.union($1.extent) }
            let box = extent.clipped(width: Double(SceneGeometry.width), height: Double(SceneGeometry.height))
            if box.width >= 1 && box.height >= 1 {
                movers[i].seen = true
                movers[i].hiddenFrames = 0
                objects.append(SceneObject(id: movers[i].id, anomaly: movers[i].anomaly, extent: extent, box: box,
                                           scale: movers[i].scale, shapes: shapes))
            } else {
                movers[i].hiddenFrames += 1
            }
        }

        for i in movers.indices { movers[i].advance(&random) }
        // Gone: left the frame after being seen, or never came in.
        movers.removeAll { ($0.seen && $0.hiddenFrames > 0) || $0.hiddenFrames > 40 }
        return SceneFrame(index: t, objects: objects)
    }

    /// A lane (foot row) away from the others' lanes where possible.
    private mutating func pickLane(from low: Double, to high: Double) -> Double {
        var best = low, bestGap = -1.0
        for _ in 0..<12 {
            let lane = random.uniform(low, high)
            let gap = movers.map { abs($0.y - lane) }.min() ?? .infinity
            if gap >= ClipSimulation.laneGap { return lane }
            if gap > bestGap { best = lane; bestGap = gap }
        }
        return best
    }

    private mutating func spawnWalker(x: Double, heading: Double? = nil) {
        let look = Look.person(&random)
        let heading = heading ?? random.sign()
        let lane = pickLane(from: SceneGeometry.walkTop, to: SceneGeometry.walkBottom)
        let slope = random.chance(0.6) ? 0 : random.uniform(-0.3, 0.3)
        let pace = random.uniform(0.8, 1.2)
        movers.append(Mover(id: nextID, look: look, x: x, y: lane, heading: heading, slope: slope, pace: pace,
                            walkingPace: pace, phase: random.uniform(0, 2 * Double.pi)))
        nextID += 1
    }

    /// Starts an episode; false when no walker can host it yet.
    private mutating func startEpisode(_ episode: Episode, at t: Int) -> Bool {
        let width = Double(SceneGeometry.width)
        switch episode.kind {
        case .cyclist, .cart:
            var look = Look.person(&random)
            look.body = episode.kind == .cyclist ? .bicycle : .cart
            look.size = random.uniform(0.95, 1.15)
            if episode.kind == .cyclist {
                look.accent = random.chance(0.5) ? random.uniform(200, 235) : random.uniform(20, 45)
            } else {
                look.accent = random.uniform(20, 45)
                look.light = random.uniform(210, 240)
            }
            let start = crossingHalfWidth(episode.kind, scale: SceneGeometry.scale(episode.lane))
            var mover = Mover(id: nextID, look: look, x: episode.heading > 0 ? -start : width + start, y: episode.lane,
                              heading: episode.heading, slope: 0, pace: episode.pace, walkingPace: episode.pace, phase: 0)
            mover.anomaly = episode.kind
            movers.append(mover)
            nextID += 1
        case .runner, .jumper, .erratic:
            // A walker in full view near the middle hosts it.
            let hosts = movers.indices.filter { i in
                let m = movers[i]
                return m.look.body == .person && m.seen && m.hiddenFrames == 0 && m.x > 40 && m.x < width - 40
            }
            guard let host = hosts.min(by: { abs(movers[$0].x - width / 2) < abs(movers[$1].x - width / 2) }) else {
                return false
            }
            var m = movers[host]
            m.anomaly = episode.kind
            m.anomalyEnd = t + episode.duration
            switch episode.kind {
            case .runner:
                // Sprints towards the farther edge: the episode stays in view.
                m.heading = m.x < width / 2 ? 1 : -1
                m.pace = random.uniform(3, 4)
            case .jumper:
                m.jumpClock = 0
                m.jumpPeriod = episode.period
                m.jumpHeight = random.uniform(0.35, 0.5)
            default:
                m.dartFrames = 0
            }
            movers[host] = m
        }
        episodesShown.append(episode.kind)
        return true
    }
}

// MARK: - Figures

/// The shapes of an object in its current pose, back to front.
private func figure(_ m: Mover) -> [SceneShape] {
    let h = m.figureHeight
    let f = m.heading
    let x = m.x, y = m.y
    switch m.look.body {
    case .person:
        let running = m.anomaly == .runner
        let swing = running ? 0.26 : (m.anomaly == .erratic ? 0.2 : 0.16)
        let lean = running ? 0.1 * h * f : 0
        var lift = 0.0, spread = 0.0
        if m.anomaly == .jumper {
            spread = abs(portableSine(Double.pi * Double(m.jumpClock) / Double(m.jumpPeriod)))
            lift = m.jumpHeight * h * spread
        }
        let ground = y - lift
        let s = portableSine(m.phase)
        let legRadius = 0.06 * h
        let hip = (x + 0.3 * lean, ground - 0.47 * h)
        let shoulder = (x + lean, ground - 0.71 * h)
        var shapes: [SceneShape] = []
        for side in [1.0, -1.0] {
            let footX = spread > 0 ? x + side * 0.2 * h * spread : x + side * f * swing * h * s
            shapes.append(.limb(hip, (footX, ground - legRadius), legRadius, m.look.trousers))
        }
        shapes.append(.limb((x + 0.3 * lean, ground - 0.5 * h), (x + lean, ground - 0.72 * h), 0.12 * h, m.look.shirt))
        shapes.append(.disc(x + 1.1 * lean, ground - 0.89 * h, 0.11 * h, m.look.head))
        let sleeve = m.look.shirt * 0.85 + 10
        for side in [1.0, -1.0] {
            let hand = m.anomaly == .jumper
                ? (x + side * (0.15 + 0.15 * spread) * h, ground - (0.71 + 0.3 * spread) * h)
                : (x + lean - side * f * 0.8 * swing * h * s, ground - 0.45 * h)
            shapes.append(.limb(shoulder, hand, 0.045 * h, sleeve))
        }
        return shapes
    case .bicycle:
        let wheel = 0.22 * h, rim = 0.035 * h
        let hub = y - wheel - rim
        let rear = (x - f * 0.36 * h, hub), front = (x + f * 0.36 * h, hub)
        let crank = (x, hub)
        let seat = (x - f * 0.1 * h, y - 0.55 * h), bar = (x + f * 0.28 * h, y - 0.62 * h)
        let hip = (seat.0, seat.1 - 0.03 * h)
        let shoulder = (x + f * 0.12 * h, y - 0.92 * h)
        func leg(_ angle: Double) -> [SceneShape] {
            let pedal = (crank.0 + 0.12 * h * portableSine(angle + Double.pi / 2), crank.1 + 0.12 * h * portableSine(angle))
            let knee = ((hip.0 + pedal.0) / 2 + f * 0.12 * h, (hip.1 + pedal.1) / 2 - 0.05 * h)
            return [.limb(hip, knee, 0.05 * h, m.look.trousers), .limb(knee, pedal, 0.045 * h, m.look.trousers)]
        }
        let frameRadius = 0.025 * h
        var shapes = leg(m.phase + Double.pi)
        shapes += [
            .ring(cx: rear.0, cy: rear.1, radius: wheel, halfWidth: rim, tone: 30),
            .ring(cx: front.0, cy: front.1, radius: wheel, halfWidth: rim, tone: 30),
            .limb(rear, seat, frameRadius, m.look.accent), .limb(rear, crank, frameRadius, m.look.accent),
            .limb(crank, seat, frameRadius, m.look.accent), .limb(crank, bar, frameRadius, m.look.accent),
            .limb(bar, front, frameRadius, m.look.accent),
            .limb(hip, shoulder, 0.11 * h, m.look.shirt),
            .disc(x + f * 0.2 * h, y - 1.02 * h, 0.1 * h, m.look.head),
            .limb(shoulder, bar, 0.04 * h, m.look.shirt * 0.85 + 10),
        ]
        shapes += leg(m.phase)
        return shapes
    case .cart:
        let wheel = 0.1 * h
        return [
            .limb((x - f * 0.7 * h, y - 0.55 * h), (x - f * 0.9 * h, y - 0.85 * h), 0.03 * h, m.look.accent),
            .panel(x1: x - 0.7 * h, y1: y - 0.62 * h, x2: x + 0.7 * h, y2: y - 0.17 * h,
                   cell: 0.15 * h, tone: m.look.light, altTone: m.look.accent),
            .disc(x - 0.48 * h, y - wheel, wheel, 25),
            .disc(x + 0.48 * h, y - wheel, wheel, 25),
        ]
    }
}

// MARK: - Rasteriser

/// Blends a shape into grey pixels: coverage from the signed distance at
/// each pixel centre, over a one-pixel ramp, so sub-pixel motion is smooth.
private func rasterise(_ shape: SceneShape, into pixels: UnsafeMutableBufferPointer<Float>, width: Int, height: Int) {
    let e = shape.extent
    let i0 = max(0, Int((e.x1 - 0.5).rounded(.down))), i1 = min(width - 1, Int((e.x2 + 0.5).rounded(.up)))
    let j0 = max(0, Int((e.y1 - 0.5).rounded(.down))), j1 = min(height - 1, Int((e.y2 + 0.5).rounded(.up)))
    guard i0 <= i1, j0 <= j1 else { return }

    /// `field` gives (signed distance, tone) at a pixel centre.
    func fill(_ field: (Float, Float) -> (Float, Float)) {
        for j in j0...j1 {
            let py = Float(j) + 0.5
            let row = j &* width
            for i in i0...i1 {
                let (distance, tone) = field(Float(i) + 0.5, py)
                let coverage = min(max(0.5 - distance, 0), 1)
                if coverage > 0 {
                    let k = row &+ i
                    pixels[k] += (tone - pixels[k]) * coverage
                }
            }
        }
    }

    switch shape {
    case let .capsule(ax, ay, bx, by, radius, tone):
        let bax = Float(bx - ax), bay = Float(by - ay), r = Float(radius), t = Float(tone)
        let ax = Float(ax), ay = Float(ay)
        let length2 = bax * bax + bay * bay
        let inverse: Float = length2 > 0 ? 1 / length2 : 0
        fill { px, py in
            let pax = px - ax, pay = py - ay
            let along = min(max((pax * bax + pay * bay) * inverse, 0), 1)
            let dx = pax - bax * along, dy = pay - bay * along
            return ((dx * dx + dy * dy).squareRoot() - r, t)
        }
    case let .ring(cx, cy, radius, halfWidth, tone):
        let cx = Float(cx), cy = Float(cy), r = Float(radius), w = Float(halfWidth), t = Float(tone)
        fill { px, py in
            let dx = px - cx, dy = py - cy
            return (abs((dx * dx + dy * dy).squareRoot() - r) - w, t)
        }
    case let .panel(x1, y1, x2, y2, cell, tone, altTone):
        let x1 = Float(x1), y1 = Float(y1), x2 = Float(x2), y2 = Float(y2)
        let perCell = 1 / Float(cell), t = Float(tone), alt = Float(altTone)
        fill { px, py in
            let dx = max(x1 - px, px - x2), dy = max(y1 - py, py - y2)
            let ox = max(dx, 0), oy = max(dy, 0)
            let u = Int(((px - x1) * perCell).rounded(.down)), v = Int(((py - y1) * perCell).rounded(.down))
            return ((ox * ox + oy * oy).squareRoot() + min(max(dx, dy), 0), (u &+ v) & 1 == 0 ? t : alt)
        }
    }
}

// MARK: - Background

/// Smooth noise in [-1, 1]: random values on a grid of `cell` pixels,
/// interpolated with smoothstep weights.
private func valueNoise(_ random: inout SceneRandom, cell: Int, width: Int, height: Int) -> [Float] {
    let gw = width / cell + 2, gh = height / cell + 2
    let grid = (0..<(gw * gh)).map { _ in Float(random.uniform(-1, 1)) }
    var out = [Float](repeating: 0, count: width * height)
    func smooth(_ t: Float) -> Float { t * t * (3 - 2 * t) }
    for y in 0..<height {
        let gy = y / cell, ty = smooth(Float(y % cell) / Float(cell))
        for x in 0..<width {
            let gx = x / cell, tx = smooth(Float(x % cell) / Float(cell))
            let a = grid[gy * gw + gx], b = grid[gy * gw + gx + 1]
            let c = grid[(gy + 1) * gw + gx], d = grid[(gy + 1) * gw + gx + 1]
            out[y * width + x] = (a + (b - a) * tx) * (1 - ty) + (c + (d - c) * tx) * ty
        }
    }
    return out
}

/// The empty scene: a building facade with windows at the top, a kerb, then
/// the walkway, brighter towards the camera, with mottled paving whose
/// joints follow the perspective, and a few fixtures (bench, planters, lamp
/// post, drain cover).
private func renderBackground(_ random: inout SceneRandom) -> [Float] {
    let width = SceneGeometry.width, height = SceneGeometry.height
    let coarse = valueNoise(&random, cell: 24, width: width, height: height)
    let fine = valueNoise(&random, cell: 6, width: width, height: height)
    let kerb = SceneGeometry.facadeBottom
    // Paving joints across: one every 12 ground units, stepping with the perspective.
    var joints: [Double] = []
    var row = kerb + 3
    while row < Double(height) {
        joints.append(row)
        row += 12 * SceneGeometry.scale(row)
    }
    // Facade panels: each 20 columns with its own tone and window.
    let panelTones = (0..<(width / 20 + 1)).map { _ in random.uniform(78, 100) }
    let windowTones = (0..<(width / 20 + 1)).map { _ in random.chance(0.3) ? random.uniform(150, 180) : random.uniform(40, 60) }

    var pixels = [Float](repeating: 0, count: width * height)
    for y in 0..<height {
        let py = Double(y) + 0.5
        for x in 0..<width {
            let px = Double(x) + 0.5
            let k = y * width + x
            var v: Double
            if py < kerb {
                let panel = x / 20, col = x % 20
                v = panelTones[panel] + Double(coarse[k]) * 4 + Double(fine[k]) * 3
                if col >= 5 && col < 15 && y >= 8 && y < 24 { v = windowTones[panel] + Double(fine[k]) * 4 }
                if col == 0 { v -= 18 }
            } else if py < kerb + 3 {
                v = 185 + Double(fine[k]) * 6
            } else {
                let scale = SceneGeometry.scale(py)
                v = 118 + 28 * (py - kerb) / (Double(height) - kerb) + Double(coarse[k]) * 10 + Double(fine[k]) * 6
                // Joints along: lines converging on the vanishing point, every 26 ground units.
                let u = (px - Double(width) / 2) / scale / 26
                let along = abs(u - u.rounded()) * 26 * scale
                var across = Double.infinity
                for joint in joints { across = min(across, abs(joint - py)) }
                let joint = max(0, 1 - min(along, across))
                v -= 16 * joint
            }
            pixels[k] = Float(v)
        }
    }

    var fixtures: [SceneShape] = []
    // A bench against the kerb, a lamp post, two planters and a drain cover.
    let benchX = random.uniform(20, 90)
    fixtures += [
        .panel(x1: benchX, y1: 38, x2: benchX + 34, y2: 43, cell: 100, tone: 70, altTone: 70),
        .limb((benchX + 3, 43), (benchX + 3, 47), 1, 45), .limb((benchX + 31, 43), (benchX + 31, 47), 1, 45),
    ]
    let lampX = random.uniform(140, 220)
    fixtures += [.limb((lampX, 8), (lampX, 46), 1.2, 50), .disc(lampX, 7, 3, 205)]
    for side in [0.0, 1.0] {
        let px = side == 0 ? random.uniform(4, 24) : random.uniform(200, 220)
        let py = random.uniform(60, 140)
        let s = 14 * SceneGeometry.scale(py)
        fixtures += [.panel(x1: px, y1: py - s, x2: px + s, y2: py, cell: 100, tone: 172, altTone: 172),
                     .panel(x1: px + 1.5, y1: py - s, x2: px + s - 1.5, y2: py - s + 3, cell: 100, tone: 62, altTone: 62)]
    }
    let drainX = random.uniform(80, 160), drainY = random.uniform(95, 140)
    fixtures.append(.ring(cx: drainX, cy: drainY, radius: 5 * SceneGeometry.scale(drainY), halfWidth: 0.8, tone: 85))
    pixels.withUnsafeMutableBufferPointer { buffer in
        for shape in fixtures { rasterise(shape, into: buffer, width: width, height: height) }
    }
    return pixels
}
