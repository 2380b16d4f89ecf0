# pkgnet: build, test and install libpkgnet.so.
#
#   make deps                       install missing system and Python packages
#   make build                      swift build -c release -> .build/release/libpkgnet.so
#                                   and the command-line tool .build/release/pkgnet
#   make test                       deps, build, swift test, Python + C API tests
#   make install PREFIX=/usr/local  library, header, pkg-config file and bin/pkgnet
#   make demo [DATA=dir]            train and evaluate on a synthetic scene (or DATA)
#   make clean

PREFIX ?= /usr/local
DESTDIR ?=
PYTHON ?= python3
SWIFT ?= swift

VERSION := $(shell sed -n 's/^\#define PKGNET_VERSION_STRING "\(.*\)"/\1/p' include/pkgnet.h)
SOVERSION := $(firstword $(subst ., ,$(VERSION)))
LIB := .build/release/libpkgnet.so
# SwiftPM wants unique product names and "pkgnet" is the library's, so the
# executable product is pkgnet-cli; users get it as `pkgnet`.
CLI := .build/release/pkgnet
CLI_PRODUCT := .build/release/pkgnet-cli
LIBDIR := $(DESTDIR)$(PREFIX)/lib
BINDIR := $(DESTDIR)$(PREFIX)/bin
INCDIR := $(DESTDIR)$(PREFIX)/include
PCDIR := $(LIBDIR)/pkgconfig
REALNAME := libpkgnet.so.$(VERSION)
SONAME := libpkgnet.so.$(SOVERSION)

export PYTHONPATH := $(CURDIR)/bindings/python$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: all deps build test install uninstall ldconfig demo clean

all: build

deps:
	bash scripts/install-deps.sh

# SwiftPM links its products with a RUNPATH ($$ORIGIN, and the toolchain's
# folder unless the stdlib is static). The library links the Swift runtime
# statically, so a RUNPATH only makes the loader look in places that must not
# matter to an installed library: drop it, from the build and from installs.
define strip_runpath
	@if readelf -d $(1) | grep -qE '\((RUNPATH|RPATH)\)'; then \
	    command -v patchelf >/dev/null || { echo "patchelf is missing: run 'make deps'" >&2; exit 1; }; \
	    echo "removing RUNPATH from $(1)"; \
	    patchelf --remove-rpath $(1); \
	fi
endef

build:
	$(SWIFT) build -c release
	$(call strip_runpath,$(LIB))
	@# Programs linked against the build tree ask for the SONAME.
	ln -sfn libpkgnet.so .build/release/$(SONAME)
	@readelf -d $(LIB) | grep -q 'SONAME.*\[$(SONAME)\]' || { echo "$(LIB): SONAME is not $(SONAME)" >&2; exit 1; }
	@# The image codecs are the CLI's alone: the library must not need them.
	@! readelf -d $(LIB) | grep -E 'NEEDED.*(jpeg|png|tiff)' || { echo "$(LIB) must not link image codecs" >&2; exit 1; }
	@# The CLI links the engine statically ($$ORIGIN finds nothing it needs).
	$(call strip_runpath,$(CLI_PRODUCT))
	cp -f $(CLI_PRODUCT) $(CLI)

$(LIB) $(CLI):
	$(MAKE) build

test: deps build
	$(SWIFT) test
	bash scripts/fuzz.sh --short
	@# Last, so that its summary line closes the output CI reads.
	$(PYTHON) -m pytest bindings/python/tests -q

install: $(LIB) $(CLI)
	install -d $(LIBDIR) $(INCDIR) $(PCDIR) $(BINDIR)
	install -m 0755 $(CLI) $(BINDIR)/pkgnet
	install -m 0755 $(LIB) $(LIBDIR)/$(REALNAME)
	$(call strip_runpath,$(LIBDIR)/$(REALNAME))
	ln -sfn $(REALNAME) $(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(LIBDIR)/libpkgnet.so
	install -m 0644 include/pkgnet.h $(INCDIR)/pkgnet.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' pkgnet.pc.in > $(PCDIR)/pkgnet.pc
	chmod 0644 $(PCDIR)/pkgnet.pc
	@$(MAKE) --no-print-directory ldconfig

uninstall:
	rm -f $(LIBDIR)/$(REALNAME) $(LIBDIR)/$(SONAME) $(LIBDIR)/libpkgnet.so \
	    $(INCDIR)/pkgnet.h $(PCDIR)/pkgnet.pc $(BINDIR)/pkgnet
	@$(MAKE) --no-print-directory ldconfig

# Refreshes the loader cache when PREFIX/lib is a folder the loader searches
# by default (a system prefix), and only for a real install, not a DESTDIR
# staging tree. -N -X: list the folders without touching the cache.
ldconfig:
	@if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null 2>&1; then \
	    case "$(PREFIX)" in \
	    /usr|/usr/local) system=1 ;; \
	    *) ldconfig -v -N -X 2>/dev/null | grep -q '^$(PREFIX)/lib:' && system=1 || system= ;; \
	    esac; \
	    if [ -n "$$system" ]; then echo ldconfig; ldconfig; fi; \
	fi

# The main job (examples/scripts/demo.sh): generate a synthetic scene, train
# a model on its normal part, score its test part, print the AUROC and write
# an HTML report. `make demo DATA=../shared/data/ped2` runs it on a real data set.
demo: deps build
	DATA="$(DATA)" bash examples/scripts/demo.sh

clean:
	rm -rf .build
	find bindings examples -name __pycache__ -type d -prune -exec rm -rf {} +
