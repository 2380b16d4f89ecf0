// A small PNG encoder for the synthetic scene's frames. libpng through
// pkio_write_png would do, but its zlib spends ~20 ms a frame on noisy
// pixels (most of a data set's generation time), and its output bytes
// depend on the zlib version installed. This encoder is one pass, ~1 ms a
// frame, and its bytes depend on the pixels only: Sub-filtered rows in one
// deflate block of Huffman-coded literals (no string matching; sensor noise
// leaves little to match), about half the raw size.

/// A PNG file (8-bit RGB, no interlace) of `width` x `height` pixels, rows
/// packed (`width * 3` bytes each).
func portablePNG(rgb: UnsafeBufferPointer<UInt8>, width: Int, height: Int) -> [UInt8] {
    precondition(width > 0 && height > 0 && rgb.count == width * height * 3, "portablePNG: pixel count does not match the size")
    let rowBytes = width * 3
    // Filter type 1 (Sub) on every row: each byte minus the byte one pixel
    // to its left; smooth grey gives small differences, cheap to code.
    var filtered = [UInt8](repeating: 0, count: height * (rowBytes + 1))
    filtered.withUnsafeMutableBufferPointer { out in
        var o = 0
        for y in 0..<height {
            let row = y &* rowBytes
            out[o] = 1
            o &+= 1
            for i in 0..<rowBytes {
                out[o] = i < 3 ? rgb[row &+ i] : rgb[row &+ i] &- rgb[row &+ i &- 3]
                o &+= 1
            }
        }
    }

    var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    var header: [UInt8] = []
    appendBigEndian(UInt32(width), to: &header)
    appendBigEndian(UInt32(height), to: &header)
    header += [8, 2, 0, 0, 0]   // 8 bits, RGB, deflate, adaptive filters, no interlace
    appendChunk("IHDR", header, to: &png)
    appendChunk("IDAT", zlibHuffmanOnly(filtered), to: &png)
    appendChunk("IEND", [], to: &png)
    return png
}

private func appendBigEndian(_ value: UInt32, to bytes: inout [UInt8]) {
    bytes += [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
}

private func appendChunk(_ type: String, _ data: [UInt8], to png: inout [UInt8]) {
    appendBigEndian(UInt32(data.count), to: &png)
    let typed = Array(type.utf8) + data
    png += typed
    appendBigEndian(crc32(typed), to: &png)
}

private let crcTable: [UInt32] = (0..<256).map { n in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}

private func crc32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    crcTable.withUnsafeBufferPointer { table in
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
    }
    return c ^ 0xFFFF_FFFF
}

private func adler32(_ bytes: [UInt8]) -> UInt32 {
    var a: UInt32 = 1, b: UInt32 = 0
    bytes.withUnsafeBufferPointer { data in
        var i = 0
        while i < data.count {
            // 5552 bytes keep the sums below 2^32 before the modulo (zlib's NMAX).
            let end = min(i + 5552, data.count)
            while i < end { a &+= UInt32(data[i]); b &+= a; i &+= 1 }
            a %= 65521
            b %= 65521
        }
    }
    return b << 16 | a
}

/// Bits packed least significant first, as deflate wants.
private struct BitWriter {
    var bytes: [UInt8] = []
    private var buffer: UInt64 = 0
    private var count: UInt64 = 0

    mutating func write(_ value: UInt32, bits: Int) {
        buffer |= UInt64(value) << count
        count &+= UInt64(bits)
        while count >= 8 {
            bytes.append(UInt8(truncatingIfNeeded: buffer))
            buffer >>= 8
            count &-= 8
        }
    }

    mutating func flush() {
        if count > 0 { bytes.append(UInt8(truncatingIfNeeded: buffer)) }
        buffer = 0
        count = 0
    }
}

/// Huffman code lengths for symbol counts, none longer than `limit`. Ties
/// break by symbol, so the lengths depend on the counts only. Codes come out
/// complete (inflate rejects incomplete ones): at least two symbols get one.
private func huffmanLengths(_ counts: [Int], limit: Int) -> [Int] {
    var weights = counts
    var used = weights.indices.filter { weights[$0] > 0 }
    for filler in 0..<weights.count where used.count < 2 && weights[filler] == 0 {
        weights[filler] = 1
        used.append(filler)
    }
    while true {
        // Two-queue Huffman: leaves sorted by weight, merged nodes in the
        // order made (their weights never decrease).
        let leaves = used.sorted { (weights[$0], $0) < (weights[$1], $1) }
        var nodeWeight: [Int] = [], parent: [Int] = []
        var leafParent = [Int](repeating: -1, count: weights.count)
        var nextLeaf = 0, nextNode = 0
        func takeSmallest() -> (isLeaf: Bool, index: Int, weight: Int) {
            if nextLeaf < leaves.count && (nextNode >= nodeWeight.count || weights[leaves[nextLeaf]] <= nodeWeight[nextNode]) {
                nextLeaf += 1
                return (true, leaves[nextLeaf - 1], weights[leaves[nextLeaf - 1]])
            }
            nextNode += 1
            return (false, nextNode - 1, nodeWeight[nextNode - 1])
        }
        for _ in 0..<(leaves.count - 1) {
            let a = takeSmallest(), b = takeSmallest()
            let id = nodeWeight.count
            nodeWeight.append(a.weight + b.weight)
            parent.append(-1)
            for child in [a, b] {
                if child.isLeaf { leafParent[child.index] = id } else { parent[child.index] = id }
            }
        }
        // Depth of each merged node, from the root (the last one) down.
        var depth = [Int](repeating: 0, count: nodeWeight.count)
        for id in stride(from: nodeWeight.count - 2, through: 0, by: -1) { depth[id] = depth[parent[id]] + 1 }
        var lengths = [Int](repeating: 0, count: weights.count)
        for s in used { lengths[s] = depth[leafParent[s]] + 1 }
        if lengths.max()! <= limit { return lengths }
        // Too deep: flatten the counts and build again.
        for s in used { weights[s] = (weights[s] + 1) / 2 }
    }
}

/// Canonical Huffman codes for lengths (RFC 1951 3.2.2), bit-reversed:
/// deflate sends a code's most significant bit first into a stream packed
/// least significant bit first.
private func huffmanTable(_ lengths: [Int]) -> [(code: UInt32, length: Int)] {
    let maxLength = lengths.max() ?? 0
    var perLength = [UInt32](repeating: 0, count: maxLength + 1)
    for l in lengths where l > 0 { perLength[l] += 1 }
    var next = [UInt32](repeating: 0, count: maxLength + 2)
    var code: UInt32 = 0
    for bits in 1...max(maxLength, 1) {
        code = (code + (bits > 1 ? perLength[bits - 1] : 0)) << 1
        next[bits] = code
    }
    return lengths.map { l in
        guard l > 0 else { return (0, 0) }
        var c = next[l], reversed: UInt32 = 0
        next[l] += 1
        for _ in 0..<l { reversed = reversed << 1 | (c & 1); c >>= 1 }
        return (reversed, l)
    }
}

/// A zlib stream holding `data` in one dynamic-Huffman deflate block of literals.
private func zlibHuffmanOnly(_ data: [UInt8]) -> [UInt8] {
    var counts = [Int](repeating: 0, count: 257)
    data.withUnsafeBufferPointer { bytes in
        for b in bytes { counts[Int(b)] &+= 1 }
    }
    counts[256] = 1   // end of block
    let literalLengths = huffmanLengths(counts, limit: 15)
    let literals = huffmanTable(literalLengths)
    // No back-references, but inflate wants a complete distance code: two of one bit.
    let distanceLengths = [1, 1]

    // Code lengths are sent as symbols 0-15 of the code-length alphabet
    // (no run-length symbols 16-18: they would save ~100 bytes a frame).
    let sequence = literalLengths + distanceLengths
    var lengthCounts = [Int](repeating: 0, count: 19)
    for l in sequence { lengthCounts[l] += 1 }
    let lengthLengths = huffmanLengths(lengthCounts, limit: 7)
    let lengthCodes = huffmanTable(lengthLengths)
    let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
    var sent = order.count
    while sent > 4 && lengthLengths[order[sent - 1]] == 0 { sent -= 1 }

    var bits = BitWriter()
    bits.bytes = [0x78, 0x01]   // zlib header: deflate, 32 KiB window, no dictionary; (0x7801 % 31 == 0)
    bits.bytes.reserveCapacity(data.count)
    bits.write(1, bits: 1)      // final block
    bits.write(2, bits: 2)      // dynamic Huffman codes
    bits.write(UInt32(literalLengths.count - 257), bits: 5)
    bits.write(UInt32(distanceLengths.count - 1), bits: 5)
    bits.write(UInt32(sent - 4), bits: 4)
    for i in 0..<sent { bits.write(UInt32(lengthLengths[order[i]]), bits: 3) }
    for l in sequence { bits.write(lengthCodes[l].code, bits: lengthCodes[l].length) }
    literals.withUnsafeBufferPointer { table in
        data.withUnsafeBufferPointer { bytes in
            for b in bytes {
                let entry = table[Int(b)]
                bits.write(entry.code, bits: entry.length)
            }
        }
    }
    bits.write(literals[256].code, bits: literals[256].length)
    bits.flush()
    appendBigEndian(adler32(data), to: &bits.bytes)
    return bits.bytes
}
