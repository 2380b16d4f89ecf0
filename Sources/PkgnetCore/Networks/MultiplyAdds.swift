/// Multiply-adds per cube of the networks as direct convolutions compute
/// them (kernel taps x input channels per group x output elements): the
/// work figure GFLOP/s are quoted against (2 FLOPs per multiply-add), the
/// same count whichever algorithm (Winograd, im2col) runs a layer.
extension Conv2D {
    func multiplyAdds(inputSize: Int) -> Int {
        let side = outputSize(inputSize)
        return cout * (cin / groups) * kernel * kernel * side * side
    }
}

extension SameConv2D {
    func multiplyAdds(inputSize: Int) -> Int {
        // the padded copy (unequal padding) is what the convolution reads
        conv.multiplyAdds(inputSize: inputSize + before + after - 2 * conv.pad)
    }
}

extension Student {
    var multiplyAdds: Int {
        func double(_ block: DoubleConv, _ side: Int) -> Int {
            block.first.multiplyAdds(inputSize: side) + block.second.multiplyAdds(inputSize: side)
        }
        var total = double(inConv, 32)
        for (n, down) in downs.enumerated() {
            let side = 16 >> n
            if let strided = down.stridedConv { total += strided.multiplyAdds(inputSize: 2 * side) }
            total += double(down.block, side)
        }
        for (n, up) in ups.enumerated() {
            let side = 8 << n  // output side; the transposed conv reads side/2
            total += up.upsample.cin * up.upsample.cout * 9 * (side / 2) * (side / 2)
            total += double(up.block, side)
        }
        total += outConv.multiplyAdds(inputSize: 32)
        for (pair, shape) in zip(pairs, pairs.map { $0.feature.shape(width: width) }) {
            total += pair.projection?.multiplyAdds(inputSize: shape.size) ?? 0
        }
        return total
    }
}

extension Teacher {
    /// Up to the deepest of `blocks`, as scoring runs it.
    func multiplyAdds(blocks: [String]) -> Int {
        guard let deepest = blocks.compactMap({ blockEnds[$0] }).max() else { return 0 }
        var total = 0, side = 32
        for unit in units[0...deepest] {
            switch unit {
            case .conv(let conv):
                total += conv.multiplyAdds(inputSize: side)
                side = conv.outputSize(side)
            case .sameConv(let conv):
                total += conv.multiplyAdds(inputSize: side)
                side = conv.outputSize(side)
            case .maxPool(let kernel, let stride, let pad):
                side = (side + 2 * pad - kernel) / stride + 1
            case .residual(let block):
                var h = side
                for conv in block.convs {
                    total += conv.multiplyAdds(inputSize: h)
                    h = conv.outputSize(h)
                }
                if case .projection(let downsample) = block.shortcut { total += downsample.multiplyAdds(inputSize: side) }
                side = h
            case .mbConv(let block):
                total += block.expand?.multiplyAdds(inputSize: side) ?? 0
                total += block.depthwise.multiplyAdds(inputSize: side)
                let reduced = block.depthwise.outputSize(side)
                total += block.project.multiplyAdds(inputSize: reduced)
                side = reduced
            }
        }
        return total
    }
}

extension Model {
    /// Multiply-adds of student and teacher per scored cube.
    public var multiplyAddsPerCube: Int { student.multiplyAdds + teacher.multiplyAdds(blocks: teacherBlocks) }
}
