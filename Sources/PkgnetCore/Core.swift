import FoundationEssentials
import PkgnetKernels
public struct Meta: Codable { public var a: Int }
public func coreDummy(_ s: String) -> Int { (try? JSONDecoder().decode(Meta.self, from: Data(s.utf8)).a) ?? -1 }
