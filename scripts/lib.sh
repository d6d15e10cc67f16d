# Shared by the scripts in this folder: system packages and the cargo target dir.
# shellcheck shell=bash

# Debian packages raftgate needs to build and test: libclang for RocksDB's bindgen, a C++
# toolchain for RocksDB itself, curl for the demo, fuse3 (fusermount3) for the chaos tests'
# power-loss disk when a direct FUSE mount is refused.
RAFTGATE_APT_PACKAGES="libclang-dev clang build-essential pkg-config curl ca-certificates python3 debootstrap fuse3"

install_system_packages() {
    local missing=""
    for p in $RAFTGATE_APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "==> installing system packages:$missing"
        if [ "$(id -u)" -ne 0 ]; then
            echo "error: run as root (or install these yourself):$missing" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; install a Rust toolchain (rustup) first" >&2
        return 1
    fi
}

# RocksDB's C++ takes ~20 minutes to compile on 2 cores, once per profile. A target dir kept
# outside the clone is reused by later clones on the same machine; a fresh machine just builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/raftgate-target}"

# pgo_fingerprint: what cargo's symbol hashes, and so the profile's fit, follow (besides
# `--target`, which no script passes): the rustc, and the crate graph with its features as
# `cargo build --workspace --bins` resolves them (paths left out, so any clone gives the same).
pgo_fingerprint() {
    rustc -V
    printf 'crate graph %s\n' "$(cargo tree --locked --workspace -e normal,build --prefix none -f '{p} [{f}]' \
        | sed 's| (/[^)]*)||; s| (\*)||' | LC_ALL=C sort -u | sha256sum | cut -d' ' -f1)"
}

# Profile-guided optimisation: every build these scripts run is given the execution profile in
# pgo/ (scripts/pgo-profile.sh makes it), the build that ships and the test build alike (one
# crate graph: node/Cargo.toml; docs/ARCHITECTURE.md, "Building"). rustc needs the profile's
# absolute path, and cargo rebuilds only when RUSTFLAGS changes, so the profile is unpacked
# under the target dir with its digest in the name: a new profile means new flags, and a
# rebuild. A profile made for another rustc or crate graph (pgo/raftgate.fingerprint) fits few
# functions or none: the build is correct but slower, and this says so. RAFTGATE_PGO=off builds
# without it (a different RUSTFLAGS, so a full rebuild, RocksDB's C++ included).
use_pgo_profile() {
    local root src sum dst
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    src="$root/pgo/raftgate.profdata.gz"
    [ "${RAFTGATE_PGO:-on}" != off ] && [ -f "$src" ] || return 0
    sum=$(sha256sum "$src" | cut -c1-16)
    dst="$CARGO_TARGET_DIR/pgo/raftgate-$sum.profdata"
    # Once: test.sh sources this file and then runs docker-build.sh, which sources it again. A
    # second copy of the flag is a different RUSTFLAGS, and cargo would rebuild every crate; a
    # second check would run `cargo tree` again for the same answer.
    case " ${RUSTFLAGS:-} " in *" -Cprofile-use=$dst "*) return 0 ;; esac
    if command -v cargo >/dev/null 2>&1 && [ "$(cd "$root" && pgo_fingerprint 2>/dev/null)" != "$(grep -v '^#' "$root/pgo/raftgate.fingerprint" 2>/dev/null)" ]; then
        echo "warning: pgo/raftgate.profdata.gz was made for another rustc or crate graph than this build's" \
            "(pgo/raftgate.fingerprint), so it fits few functions or none; regenerate it with scripts/pgo-profile.sh" >&2
    fi
    if [ ! -f "$dst" ]; then
        mkdir -p "$CARGO_TARGET_DIR/pgo"
        gzip -dc "$src" > "$dst.tmp" && mv "$dst.tmp" "$dst"
    fi
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-use=$dst"
}
use_pgo_profile

# install_tool_packages PKG...: installs those Debian packages that are missing, updating the
# package lists first only if an install fails without them.
install_tool_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
        }
    done
}

# The benchmarks' load tools: nginx (the fast upstream and the peer to compare with) and wrk
# from Debian's packages, oha (open-loop load at a fixed rate) from crates.io, kept outside the
# clone. Sets OHA to its path.
install_bench_tools() {
    install_tool_packages nginx-light wrk
    OHA=/var/tmp/oha/bin/oha
    # Without the profile-use flag (its profile is raftgate's).
    [ -x "$OHA" ] || env -u RUSTFLAGS cargo install oha --locked --root /var/tmp/oha >/dev/null
}
