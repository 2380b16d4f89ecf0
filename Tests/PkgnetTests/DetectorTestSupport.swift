// Small darknet networks for the detector tests: a description that writes
// both the .cfg text and random .weights bytes, and a plain Double forward
// pass over the raw (unfolded) parameters as the reference. Independent of
// pkgnet's cfg parser, so that both sides must agree on what a cfg means.
import Foundation
import XCTest
@testable import PkgnetCore

enum TestLayer {
    case conv(filters: Int, size: Int, stride: Int = 1, pad: Int = 1, groups: Int = 1, bn: Bool = true, act: String)
    case maxpool(size: Int, stride: Int, padding: Int? = nil)
    case route([Int], groups: Int = 1, groupID: Int = 0)
    case shortcut(from: Int, act: String = "linear")
    case upsample(Int)
    case dropout
    case yolo(mask: [Int], classes: Int, scaleXY: Float = 1)
}

struct TestNetwork {
    var width: Int
    var height: Int
    var layers: [TestLayer]
    static let anchors: [Float] = [4, 6, 9, 7, 12, 15, 20, 11, 17, 26, 30, 30]

    var cfg: String {
        var text = "[net]\n# a test network\nbatch=1\nwidth=\(width)\nheight=\(height)\nchannels=3\n\n"
        for layer in layers {
            switch layer {
            case .conv(let filters, let size, let stride, let pad, let groups, let bn, let act):
                text += "[convolutional]\n" + (bn ? "batch_normalize=1\n" : "") + "filters=\(filters)\nsize=\(size)\nstride=\(stride)\n"
                    + "pad=\(pad)\n" + (groups > 1 ? "groups=\(groups)\n" : "") + "activation=\(act)\n\n"
            case .maxpool(let size, let stride, let padding):
                text += "[maxpool]\nsize=\(size)\nstride=\(stride)\n" + (padding.map { "padding=\($0)\n" } ?? "") + "\n"
            case .route(let list, let groups, let groupID):
                text += "[route]\nlayers = " + list.map(String.init).joined(separator: ", ") + "\n"
                    + (groups > 1 ? "groups=\(groups)\ngroup_id=\(groupID)\n" : "") + "\n"
            case .shortcut(let from, let act):
                text += "[shortcut]\nfrom=\(from)\nactivation=\(act)\n\n"
            case .upsample(let stride):
                text += "[upsample]\nstride=\(stride)\n\n"
            case .dropout:
                text += "[dropout]\nprobability=.15\n\n"
            case .yolo(let mask, let classes, let scaleXY):
                text += "[yolo]\nmask = " + mask.map(String.init).joined(separator: ",") + "\nanchors = "
                    + TestNetwork.anchors.map { String(Int($0)) }.joined(separator: ", ") + "\nclasses=\(classes)\n"
                    + "num=\(TestNetwork.anchors.count / 2)\njitter=.3\nscale_x_y = \(scaleXY)\n\n"
            }
        }
        return text
    }

    /// A tensor [c][h][w] in Double.
    struct Tensor {
        var c: Int, h: Int, w: Int
        var v: [Double]
        subscript(c: Int, y: Int, x: Int) -> Double { v[(c * h + y) * w + x] }
    }

    /// Random weights for every convolution (a 20-byte header, then floats
    /// in darknet's order) and the reference outputs of every [yolo] head
    /// for `frame` (BGR, height x width x 3, the network's size).
    func weightsAndHeads(seed: UInt64, frame: [UInt8]) -> (weights: [UInt8], heads: [Tensor]) {
        var rng = KernelRNG(seed: seed)
        var floats: [Float] = []
        var heads: [Tensor] = []
        var input = Tensor(c: 3, h: height, w: width, v: [Double](repeating: 0, count: 3 * height * width))
        for c in 0..<3 {
            for y in 0..<height {
                for x in 0..<width { input.v[(c * height + y) * width + x] = Double(Float(frame[(y * width + x) * 3 + 2 - c]) * Float(1.0 / 255.0)) }
            }
        }
        var outputs: [Tensor] = []
        func activate(_ v: Double, _ act: String) -> Double {
            switch act {
            case "leaky": return v > 0 ? v : 0.1 * v
            case "relu": return max(v, 0)
            case "relu6": return min(max(v, 0), 6)
            case "logistic": return 1 / (1 + exp(-v))
            default: return v
            }
        }
        for (i, layer) in layers.enumerated() {
            let x = i == 0 ? input : outputs[i - 1]
            func at(_ r: Int) -> Int { r < 0 ? i + r : r }
            var y: Tensor
            switch layer {
            case .conv(let filters, let size, let stride, let pad, let groups, let bn, let act):
                let p = pad == 1 ? size / 2 : 0
                let cinG = x.c / groups, coutG = filters / groups
                let bias = rng.floats(filters, -0.2, 0.2)
                var gamma = [Float](), mean = [Float](), variance = [Float]()
                if bn {
                    gamma = rng.floats(filters, 0.5, 1.5)
                    mean = rng.floats(filters, -0.1, 0.1)
                    variance = rng.floats(filters, 0.5, 2)
                }
                let scale = Float((2.0 / Double(cinG * size * size)).squareRoot())
                let weight = rng.floats(filters * cinG * size * size, -scale, scale)
                floats += bias + gamma + mean + variance + weight
                let ho = (x.h + 2 * p - size) / stride + 1, wo = (x.w + 2 * p - size) / stride + 1
                y = Tensor(c: filters, h: ho, w: wo, v: [])
                for f in 0..<filters {
                    let g = f / coutG
                    for oy in 0..<ho {
                        for ox in 0..<wo {
                            var v = 0.0
                            for ci in 0..<cinG {
                                for ky in 0..<size {
                                    for kx in 0..<size {
                                        let iy = oy * stride - p + ky, ix = ox * stride - p + kx
                                        guard iy >= 0, iy < x.h, ix >= 0, ix < x.w else { continue }
                                        v += Double(weight[((f * cinG + ci) * size + ky) * size + kx]) * x[g * cinG + ci, iy, ix]
                                    }
                                }
                            }
                            if bn {
                                v = (v - Double(mean[f])) / (Double(variance[f]) + 1e-6).squareRoot() * Double(gamma[f]) + Double(bias[f])
                            } else {
                                v += Double(bias[f])
                            }
                            y.v.append(activate(v, act))
                        }
                    }
                }
            case .maxpool(let size, let stride, let padding):
                let total = padding ?? size - 1
                let ho = (x.h + total - size) / stride + 1, wo = (x.w + total - size) / stride + 1
                y = Tensor(c: x.c, h: ho, w: wo, v: [])
                for c in 0..<x.c {
                    for oy in 0..<ho {
                        for ox in 0..<wo {
                            var m = -Double.infinity
                            for ky in 0..<size {
                                for kx in 0..<size {
                                    let iy = oy * stride - total / 2 + ky, ix = ox * stride - total / 2 + kx
                                    if iy >= 0, iy < x.h, ix >= 0, ix < x.w { m = max(m, x[c, iy, ix]) }
                                }
                            }
                            y.v.append(m)
                        }
                    }
                }
            case .route(let list, let groups, let groupID):
                let parts = list.map { outputs[at($0)] }
                y = Tensor(c: parts.reduce(0) { $0 + $1.c / groups }, h: parts[0].h, w: parts[0].w, v: [])
                for t in parts {
                    let n = t.c / groups * t.h * t.w
                    y.v += t.v[(groupID * n)..<((groupID + 1) * n)]
                }
            case .shortcut(let from, let act):
                y = x
                y.v = zip(x.v, outputs[at(from)].v).map { activate($0 + $1, act) }
            case .upsample(let s):
                y = Tensor(c: x.c, h: x.h * s, w: x.w * s, v: [])
                for c in 0..<x.c {
                    for oy in 0..<(x.h * s) {
                        for ox in 0..<(x.w * s) { y.v.append(x[c, oy / s, ox / s]) }
                    }
                }
            case .dropout:
                y = x
            case .yolo:
                y = x
                heads.append(x)
            }
            outputs.append(y)
        }
        var bytes: [UInt8] = []
        for value: Int32 in [0, 2, 5] { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        withUnsafeBytes(of: UInt64(32_000).littleEndian) { bytes += $0 }
        floats.withUnsafeBytes { bytes += $0 }
        return (bytes, heads)
    }

    func network(seed: UInt64 = 7) throws -> DarknetNetwork {
        let frame = [UInt8](repeating: 0, count: width * height * 3)
        return try DarknetNetwork(cfg: cfg, cfgName: "test.cfg", weights: weightsAndHeads(seed: seed, frame: frame).weights,
                                  weightsName: "test.weights")
    }
}

/// A network with every layer kind and option the detector runs: strided,
/// 1x1, depthwise and grouped convolutions with and without BatchNorm and
/// every activation, a shortcut that becomes a residual (after a linear
/// convolution and a dropout) and one that does not, SPP-style max pools and
/// a strided one with even padding, routes that alias, slice (groups) and
/// concatenate, an upsample, two heads on a non-square input.
let everyLayerNetwork = TestNetwork(width: 32, height: 24, layers: [
    .conv(filters: 8, size: 3, stride: 2, act: "leaky"),                   // 0: 8x12x16
    .conv(filters: 8, size: 1, pad: 0, act: "leaky"),                      // 1
    .conv(filters: 8, size: 3, groups: 8, act: "relu6"),                   // 2: depthwise
    .conv(filters: 8, size: 1, pad: 0, act: "linear"),                     // 3
    .dropout,                                                              // 4
    .shortcut(from: -4),                                                   // 5: 3 + 1, fused
    .conv(filters: 8, size: 3, groups: 2, act: "leaky"),                   // 6: grouped
    .shortcut(from: -2, act: "leaky"),                                     // 7: 6 + 5, separate
    .conv(filters: 16, size: 3, stride: 2, bn: false, act: "relu"),        // 8: 16x6x8
    .maxpool(size: 3, stride: 1),                                          // 9
    .route([-2]),                                                          // 10: alias of 8
    .maxpool(size: 5, stride: 1),                                          // 11
    .route([-1, -3, -4]),                                                  // 12: 48x6x8
    .conv(filters: 48, size: 5, groups: 48, act: "leaky"),                 // 13: depthwise 5x5
    .route([-1], groups: 2, groupID: 1),                                   // 14: 24x6x8 slice
    .conv(filters: 21, size: 1, bn: false, act: "linear"),                 // 15
    .yolo(mask: [3, 4, 5], classes: 2),                                    // 16
    .route([-5]),                                                          // 17: alias of 12
    .conv(filters: 8, size: 1, pad: 0, act: "logistic"),                  // 18: 8x6x8
    .upsample(2),                                                          // 19: 8x12x16
    .route([-1, 7]),                                                       // 20: 16x12x16
    .maxpool(size: 2, stride: 2, padding: 2),                              // 21: 16x7x9
    .conv(filters: 21, size: 1, bn: false, act: "linear"),                 // 22
    .yolo(mask: [0, 1, 2], classes: 2, scaleXY: 1.05),                     // 23
])
