import PkgnetCore
import PkgnetKernels
@_cdecl("pkgnet_dummy") public func pkgnetDummy(_ x: Int32) -> Int32 { Int32(coreDummy("{\"a\":3}")) + pkk_dummy(x) }
