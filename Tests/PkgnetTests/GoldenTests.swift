import Foundation
import XCTest
@testable import PkgnetCore

/// The engine against a PyTorch reference's outputs on real torch checkpoints
/// (../shared/golden): prediction, distilled features and scores.
final class GoldenTests: XCTestCase {
    func testK2Width16ResNet18() throws { try check(case: "k2_w16_resnet18") }
    func testK1Width16ResNet18() throws { try check(case: "k1_w16_resnet18") }
    func testK2Width64ResNeXt50() throws { try check(case: "k2_w64_resnext50") }

    private func check(case name: String) throws {
        try Fixtures.requireShared()
        let folder = Fixtures.golden.appendingPathComponent(name)
        let io = try SafeTensorsFixture(folder.appendingPathComponent("io.safetensors"))
        let metadata = io.header["__metadata__"] as! [String: String]
        let arch = metadata["teacher"]!, k = Int(metadata["k"]!)!
        let teacherFile = try FileManager.default.contentsOfDirectory(atPath: folder.path).first { $0.hasSuffix(".pth") }!
        let modelURL = Fixtures.scratch.appendingPathComponent("\(name).safetensors")
        try Fixtures.python(["-m", "pkgnet.convert", "--student", folder.appendingPathComponent("student.pt").path,
                             "--k", String(k), "--task", "pred",
                             "--teacher", "\(arch)=\(folder.appendingPathComponent(teacherFile).path)",
                             "-o", modelURL.path])

        let model = try Model(path: modelURL.path)
        let session = try Session(model: model, threads: 2)
        let cubes = io.bytes("cubes")
        let n = io.shape("cubes")[0]
        let pairs = model.config.pairCount
        let predictionError = OutputBuffer(n)
        let inconsistency = OutputBuffer(n * pairs)
        let prediction = OutputBuffer(io.floats("prediction").count)
        let studentFeatures = (1...pairs).map { OutputBuffer(io.floats("student_feature_\($0)").count) }
        let teacherFeatures = (1...pairs).map { OutputBuffer(io.floats("teacher_feature_\($0)").count) }
        var outputs = ScoreOutputs()
        outputs.predictionError = predictionError.pointer
        outputs.inconsistency = inconsistency.pointer
        outputs.prediction = prediction.pointer
        outputs.studentFeatures = studentFeatures.map(\.pointer)
        outputs.teacherFeatures = teacherFeatures.map(\.pointer)
        try cubes.withUnsafeBufferPointer { input in
            try session.score(.u8(input.baseAddress!), count: n, into: outputs)
        }

        // The README of the golden data: about 1e-6 relative on scores and
        // 1e-5 on features is what an exact fp32 implementation reaches.
        XCTAssertLessThan(maxScaledDifference(prediction.values, io.floats("prediction")), 1e-5, "prediction")
        for j in 0..<pairs {
            XCTAssertLessThan(maxScaledDifference(studentFeatures[j].values, io.floats("student_feature_\(j + 1)")), 1e-5, "student feature \(j + 1)")
            XCTAssertLessThan(maxScaledDifference(teacherFeatures[j].values, io.floats("teacher_feature_\(j + 1)")), 1e-5, "teacher feature \(j + 1)")
        }
        XCTAssertLessThan(maxRelativeDifference(predictionError.values, io.floats("prediction_error"), floor: 1e-6), 1e-5, "prediction error")
        XCTAssertLessThan(maxRelativeDifference(inconsistency.values, io.floats("inconsistency"), floor: 1e-6), 1e-5, "inconsistency")
    }
}
