#!/usr/bin/env bash
# Installs what building and testing Capstan needs, when it is missing.
#   scripts/install-deps.sh build   protoc (with its well-known types) and libclang (RocksDB
#                                    bindings), a C++ compiler
#   scripts/install-deps.sh test    the above, plus etcdctl (Debian etcd-client, for the
#                                    interoperability tests)
#   scripts/install-deps.sh bench   the above, plus etcd (Debian etcd-server, the baseline)
set -euo pipefail
what=${1:-build}

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
# libclang itself (libclang.so* or libclang-<version>.so*), not libclang-cpp, which some
# machines carry without it and which bindgen cannot use.
have_libclang() {
  local f
  for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
           /usr/lib/*-linux-gnu/libclang.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so*; do
    [ -e "$f" ] && return 0
  done
  return 1
}

have_cmd protoc || need+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto), which the etcd-client crate imports.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
have_libclang || need+=(libclang-dev)
have_cmd c++ || need+=(g++)
have_cmd make || need+=(make)
if [ "$what" = test ] || [ "$what" = bench ]; then
  have_cmd etcdctl || need+=(etcd-client)
fi
if [ "$what" = bench ]; then
  have_cmd etcd || need+=(etcd-server)
fi
if ! have_cmd cargo; then
  echo "install-deps: cargo is missing; install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
[ ${#need[@]} -eq 0 ] && exit 0

if ! have_cmd apt-get; then
  echo "install-deps: missing ${need[*]} (Debian package names); this machine has no apt-get," >&2
  echo "install-deps: so install the equivalents with your package manager and run again" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if have_cmd sudo; then sudo=sudo; else
    echo "install-deps: need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1
  fi
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
