"""pkgnet: PKG-Net video anomaly scoring (binding of libpkgnet.so).

The native library is loaded on first use, so the model tools
(``python -m pkgnet.convert``) work without it.
"""
