import Foundation
import XCTest
@testable import PkgnetCore

/// Broken and inconsistent model files: each must give its status and a
/// message naming the problem, never a crash.
final class ModelFileTests: XCTestCase {
    private func valid() throws -> SafeTensorsFixture {
        try SafeTensorsFixture(Fixtures.randomModel())
    }

    private func expect(_ status: Status, _ fragment: String, bytes: Data, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try bytes.withUnsafeBytes { try Model(bytes: $0, source: "forged.safetensors") }
            XCTFail("loaded a broken file; expected \(status)", file: file, line: line)
        } catch let error as PkgnetError {
            XCTAssertEqual(error.status, status, error.message, file: file, line: line)
            XCTAssertTrue(error.message.contains(fragment), "message '\(error.message)' does not mention '\(fragment)'", file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    private func metadata(_ fixture: SafeTensorsFixture) throws -> [String: Any] {
        let text = (fixture.header["__metadata__"] as! [String: String])["pkgnet"]!
        return try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    }

    private func withMetadata(_ fixture: SafeTensorsFixture, _ edit: (inout [String: Any]) -> Void) throws -> Data {
        var config = try metadata(fixture)
        edit(&config)
        var copy = fixture
        let text = String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)
        copy.header["__metadata__"] = ["pkgnet": text]
        return try copy.encoded()
    }

    func testValidFileLoadsFromPathAndMemory() throws {
        let url = try Fixtures.randomModel()
        let fromPath = try Model(path: url.path)
        let bytes = try Data(contentsOf: url)
        let fromMemory = try bytes.withUnsafeBytes { try Model(bytes: $0) }
        XCTAssertEqual(fromPath.config.student.width, 16)
        XCTAssertEqual(fromMemory.config.teacher.arch, .resnet18)
        XCTAssertEqual(fromMemory.pairSizes, [4, 8])
    }

    func testMissingPathAndDirectory() {
        XCTAssertThrowsError(try Model(path: "/nonexistent/model.safetensors")) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .io)
            XCTAssertTrue((error as? PkgnetError)?.message.contains("/nonexistent/model.safetensors") ?? false)
        }
        XCTAssertThrowsError(try Model(path: "/tmp")) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .io)
        }
    }

    func testTooShortAndHeaderPastEnd() throws {
        expect(.format, "too short", bytes: Data())
        expect(.format, "too short", bytes: Data([1, 2, 3]))
        var header = Data(count: 8)
        header[0] = 0xff; header[1] = 0xff
        expect(.format, "runs past the end", bytes: header + Data("{}".utf8))
        expect(.format, "runs past the end", bytes: Data(repeating: 0xff, count: 8))
    }

    func testTruncatedFile() throws {
        let bytes = try valid().encoded()
        expect(.format, "outside", bytes: bytes.prefix(bytes.count - 100))
    }

    func testInvalidJSON() throws {
        let json = Data("{\"a\": [1, 2".utf8)
        var length = UInt64(json.count).littleEndian
        var bytes = Data(bytes: &length, count: 8)
        bytes.append(json)
        expect(.format, "not valid safetensors JSON", bytes: bytes)
    }

    func testEntryWithoutDtype() throws {
        var fixture = try valid()
        var entry = fixture.entry("student.decoder.outconv.conv.bias")
        entry.removeValue(forKey: "dtype")
        fixture.header["student.decoder.outconv.conv.bias"] = entry
        expect(.format, "dtype", bytes: try fixture.encoded())
    }

    func testUnknownDtype() throws {
        var fixture = try valid()
        var entry = fixture.entry("student.decoder.outconv.conv.bias")
        entry["dtype"] = "F64"
        fixture.header["student.decoder.outconv.conv.bias"] = entry
        expect(.unsupported, "F64", bytes: try fixture.encoded())
    }

    func testOffsetsOutsideData() throws {
        var fixture = try valid()
        var entry = fixture.entry("student.decoder.outconv.conv.bias")
        entry["data_offsets"] = [fixture.data.count, fixture.data.count + 12]
        fixture.header["student.decoder.outconv.conv.bias"] = entry
        expect(.format, "outside", bytes: try fixture.encoded())
    }

    func testSizeDisagreesWithShape() throws {
        var fixture = try valid()
        var entry = fixture.entry("student.decoder.outconv.conv.bias")
        entry["shape"] = [4]
        fixture.header["student.decoder.outconv.conv.bias"] = entry
        expect(.format, "needs 16", bytes: try fixture.encoded())
    }

    func testOverflowingShape() throws {
        var fixture = try valid()
        var entry = fixture.entry("student.decoder.outconv.conv.bias")
        entry["shape"] = [Int.max / 2, 4]
        fixture.header["student.decoder.outconv.conv.bias"] = entry
        expect(.format, "overflows", bytes: try fixture.encoded())
    }

    func testOverlappingTensors() throws {
        var fixture = try valid()
        let victim = "student.decoder.outconv.conv.bias"
        let other = "student.decoder.up1.up.bias"
        var entry = fixture.entry(victim)
        let otherRange = fixture.range(other)
        entry["data_offsets"] = [otherRange.lowerBound, otherRange.lowerBound + 12]
        fixture.header[victim] = entry
        expect(.format, "overlap", bytes: try fixture.encoded())
    }

    func testMissingTensor() throws {
        var fixture = try valid()
        fixture.header.removeValue(forKey: "teacher.layer2.1.bn2.running_var")
        expect(.modelMismatch, "teacher.layer2.1.bn2.running_var", bytes: try fixture.encoded())
    }

    func testExtraTensor() throws {
        var fixture = try valid()
        let start = fixture.data.count
        fixture.data.append(Data(count: 8))
        fixture.header["teacher.layer3.0.conv1.weight"] = ["dtype": "F32", "shape": [2], "data_offsets": [start, start + 8]]
        expect(.modelMismatch, "teacher.layer3.0.conv1.weight", bytes: try fixture.encoded())
    }

    func testWrongShape() throws {
        var fixture = try valid()
        var entry = fixture.entry("student.encoder.down1.mpconv.1.conv.0.weight")
        let shape = entry["shape"] as! [Int]
        entry["shape"] = [shape[1], shape[0], shape[2], shape[3]]
        fixture.header["student.encoder.down1.mpconv.1.conv.0.weight"] = entry
        expect(.modelMismatch, "expected [32, 16, 3, 3]", bytes: try fixture.encoded())
    }

    func testHeaderLengthAboveTheLimit() {
        // A length inside the file but above the limit: refused before any parsing.
        let length = UInt64(SafeTensors.maxHeaderBytes + 1)
        var bytes = withUnsafeBytes(of: length.littleEndian) { Data($0) }
        bytes.append(Data(count: SafeTensors.maxHeaderBytes + 1))
        expect(.format, "exceeds the \(SafeTensors.maxHeaderBytes)-byte limit", bytes: bytes)
    }

    func testNegativeBatchNormVariance() throws {
        var fixture = try valid()
        let range = fixture.range("student.encoder.down2.mpconv.1.conv.1.running_var")
        let negative = Float(-1).bitPattern.littleEndian
        withUnsafeBytes(of: negative) { fixture.data.replaceSubrange(range.lowerBound..<(range.lowerBound + 4), with: $0) }
        expect(.modelMismatch, "running_var' has a negative value", bytes: try fixture.encoded())
    }

    /// Each way a layer reads its weights from the file: packed (1x1),
    /// arranged for Winograd with BatchNorm folded in (3x3), packed
    /// transposed (the decoder's upsampling).
    func testNonFiniteWeight() throws {
        for name in ["student.decoder.outconv.conv.weight", "student.encoder.down2.mpconv.1.conv.3.weight",
                     "student.decoder.up1.up.weight"] {
            var fixture = try valid()
            let range = fixture.range(name)
            let nan = Float.nan.bitPattern.littleEndian
            withUnsafeBytes(of: nan) { fixture.data.replaceSubrange((range.lowerBound + 12)..<(range.lowerBound + 16), with: $0) }
            expect(.format, "tensor '\(name)' has a non-finite value (nan) at element 3", bytes: try fixture.encoded())
        }
    }

    func testMetadataProblems() throws {
        let fixture = try valid()
        expect(.unsupported, "format_version 99", bytes: try withMetadata(fixture) { $0["format_version"] = 99 })
        expect(.unsupported, "teacher.arch 'vgg16'", bytes: try withMetadata(fixture) {
            var teacher = $0["teacher"] as! [String: Any]; teacher["arch"] = "vgg16"; $0["teacher"] = teacher
        })
        expect(.format, "sigma", bytes: try withMetadata(fixture) {
            $0["scoring"] = ["weights": [1, 1, 1], "mu": [0, 0, 0], "sigma": [1, 0, 1]]
        })
        expect(.format, "scoring.mu holds 2", bytes: try withMetadata(fixture) {
            $0["scoring"] = ["weights": [1, 1, 1], "mu": [0, 0], "sigma": [1, 1, 1]]
        })
        expect(.modelMismatch, "width in the metadata is 32", bytes: try withMetadata(fixture) {
            var student = $0["student"] as! [String: Any]; student["width"] = 32; $0["student"] = student
        })
        var bare = fixture
        bare.header.removeValue(forKey: "__metadata__")
        expect(.format, "no 'pkgnet' entry", bytes: try bare.encoded())
    }

    func testTeacherThatDoesNotMatchTheStudent() throws {
        // A width-16 k=2 student (features 128x4x4 and 64x8x8) beside a
        // resnet50 teacher (512x4x4 and 256x8x8) and no projections: both
        // shapes and the missing projection in the message.
        let student = try valid()
        let teacher = try SafeTensorsFixture(Fixtures.randomModel(width: 64, arch: "resnet50"))
        var merged = student
        for name in student.header.keys where name.hasPrefix("teacher.") {
            merged.header.removeValue(forKey: name)
        }
        let shift = student.data.count
        merged.data.append(teacher.data)
        for name in teacher.header.keys where name.hasPrefix("teacher.") {
            var entry = teacher.entry(name)
            let range = teacher.range(name)
            entry["data_offsets"] = [range.lowerBound + shift, range.upperBound + shift]
            merged.header[name] = entry
        }
        let bytes = try withMetadata(merged) {
            var teacher = $0["teacher"] as! [String: Any]; teacher["arch"] = "resnet50"; $0["teacher"] = teacher
        }
        expect(.modelMismatch, "tensor 'student.projection.0.weight' is missing: pairs[0] (student bottleneck 128x4x4, teacher resnet50 layer2 512x4x4)", bytes: bytes)
    }

    /// The valid file's header JSON as text, edited, packed again with the data.
    private func editedHeader(_ fixture: SafeTensorsFixture, _ edit: (String) -> String) throws -> Data {
        let encoded = try fixture.encoded()
        let length = Int(encoded.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let json = Data(edit(String(decoding: encoded.subdata(in: 8..<(8 + length)), as: UTF8.self)).utf8)
        var size = UInt64(json.count).littleEndian
        var out = Data(bytes: &size, count: 8)
        out.append(json)
        out.append(fixture.data)
        return out
    }

    func testDuplicateTensorIsRefused() throws {
        // JSONDecoder would keep one of the two entries silently; the second
        // copy points at another tensor's bytes, so which one wins matters.
        let fixture = try valid()
        let name = "student.decoder.outconv.conv.bias"
        let other = fixture.range("student.decoder.up1.up.bias")
        let copy = "\"\(name)\":{\"data_offsets\":[\(other.lowerBound),\(other.lowerBound + 12)],\"dtype\":\"F32\",\"shape\":[3]}"
        let bytes = try editedHeader(fixture) { $0.dropLast() + "," + copy + "}" }
        expect(.format, "duplicate tensor '\(name)'", bytes: bytes)
        // The same name spelled with a JSON escape is the same key.
        let escaped = try editedHeader(fixture) { $0.dropLast() + "," + copy.replacingOccurrences(of: "\"student.", with: "\"\\u0073tudent.") + "}" }
        expect(.format, "duplicate tensor '\(name)'", bytes: escaped)
        // And __metadata__ twice.
        let metadata = try editedHeader(fixture) { $0.dropLast() + ",\"__metadata__\":{}}" }
        expect(.format, "duplicate key '__metadata__'", bytes: metadata)
    }

    func testDuplicateFieldInATensorEntryIsRefused() throws {
        let fixture = try valid()
        let bytes = try editedHeader(fixture) { text in
            // Give the first entry's dtype twice (sorted keys: "data_offsets" comes first).
            guard let range = text.range(of: "\"dtype\":\"F32\"") else { return text }
            return text.replacingCharacters(in: range, with: "\"dtype\":\"F16\",\"dtype\":\"F32\"")
        }
        expect(.format, "duplicate key 'dtype' in the header entry", bytes: bytes)
    }

    func testDuplicateKeyInPkgnetMetadataIsRefused() throws {
        var fixture = try valid()
        let text = (fixture.header["__metadata__"] as! [String: String])["pkgnet"]!
        fixture.header["__metadata__"] = ["pkgnet": "{\"format_version\":99," + text.dropFirst()]
        expect(.format, "duplicate key 'format_version'", bytes: try fixture.encoded())
    }

    func testDuplicateScanIgnoresStringsAndSiblingObjects() {
        func scan(_ text: String) -> String? {
            Array(text.utf8).withUnsafeBytes { JSONKeys.firstDuplicate(in: $0) }.map { "\($0.within ?? "")/\($0.key)" }
        }
        XCTAssertNil(scan(#"{"a":{"x":1},"b":{"x":2},"c":["a","a"],"d":"a"}"#))
        XCTAssertNil(scan(#"{"a\"b":1,"a":2,"a\\":3}"#))
        XCTAssertEqual(scan(#"{"a":1,"b":{"x":[{"k":1,"k":2}]}}"#), "b/k")
        XCTAssertEqual(scan(#"{"\ud83d\ude00":1,"😀":2}"#), "/😀")
        XCTAssertEqual(scan(#"{"a\"":1,"a\u0022":2}"#), "/a\"")
        // Cut texts (never given by JSONDecoder, but no trap either).
        XCTAssertNil(scan(#"{"a":"\"#))
        XCTAssertNil(scan(#"{"a\u00"#))
    }
}
