#!/usr/bin/env bash
# Installs what building and testing Capstan needs, when it is missing.
#   scripts/install-deps.sh build   protoc (with its well-known types) and libclang (RocksDB
#                                    bindings), a C++ compiler, Node.js and npm (the
#                                    dashboard's front-end is bundled at build time)
#   scripts/install-deps.sh test    the above, plus etcdctl and etcd (Debian etcd-client and
#                                    etcd-server), kubectl 1.20 (Debian kubernetes-client,
#                                    unpacked into .tools/), the Python kubernetes client
#                                    (PyPI, in a virtualenv under .tools/), and Chromium with
#                                    chromedriver (the dashboard's browser test)
#   scripts/install-deps.sh bench   the above, plus etcd (Debian etcd-server, the baseline) and
#                                    wrk (HTTP load, for scripts/bench-proxy.sh) and a font for
#                                    the report's plots (fonts-dejavu-core)
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
# apiserver/build.rs: npm ci + esbuild for the dashboard (apiserver/ui/).
have_cmd node || need+=(nodejs)
have_cmd npm || need+=(npm)
if [ "$what" = test ] || [ "$what" = bench ]; then
  have_cmd etcdctl || need+=(etcd-client)
  # The apiserver is tested against a real etcd too.
  have_cmd etcd || need+=(etcd-server)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
  # tests/dashboard: headless Chromium over WebDriver.
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
if [ "$what" = bench ]; then
  have_cmd etcd || need+=(etcd-server)
  # The HTTP load generator of scripts/bench-proxy.sh.
  have_cmd wrk || need+=(wrk)
  # The font of the report's plots (capstan-bench report).
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
fi
# kubectl 1.20 (Debian's kubernetes-client), unpacked into .tools/ rather than installed:
# installing it clashes with the package that may own /usr/bin/kubectl (a dispatcher that
# picks kubectl 1.27-1.33 by the server's version). The kubectl tests run both.
KUBECTL_120_DIR="$(cd "$(dirname "$0")/.." && pwd)/.tools/kubectl-1.20"
fetch_kubectl_120() {
  [ -x "$KUBECTL_120_DIR/usr/bin/kubectl" ] && return 0
  if ! have_cmd apt-get || ! have_cmd dpkg; then
    echo "install-deps: kubectl 1.20 comes from Debian's kubernetes-client; no apt-get here, so the" >&2
    echo "install-deps: kubectl tests will use only the kubectl on PATH" >&2
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  echo "install-deps: fetching kubectl 1.20 (Debian kubernetes-client) into $KUBECTL_120_DIR"
  if ! (cd "$tmp" && apt-get download -qq kubernetes-client >/dev/null 2>&1); then
    $sudo apt-get update -qq
    (cd "$tmp" && apt-get download -qq kubernetes-client >/dev/null 2>&1)
  fi
  mkdir -p "$KUBECTL_120_DIR"
  dpkg -x "$tmp"/kubernetes-client_*.deb "$KUBECTL_120_DIR"
  rm -rf "$tmp"
}

# The official Python Kubernetes client, in a virtualenv under .tools/ (the Python client
# test runs it).
PY_DIR="$(cd "$(dirname "$0")/.." && pwd)/.tools/py"
PY_KUBERNETES_VERSION=37.0.2
fetch_python_client() {
  if [ -x "$PY_DIR/bin/python" ] && "$PY_DIR/bin/python" -c "import kubernetes" 2>/dev/null; then
    return 0
  fi
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need+=(python3-venv)
    return 0
  fi
  echo "install-deps: installing the Python kubernetes client $PY_KUBERNETES_VERSION into $PY_DIR"
  python3 -m venv "$PY_DIR"
  "$PY_DIR/bin/pip" install -q "kubernetes==$PY_KUBERNETES_VERSION"
}

if ! have_cmd cargo; then
  echo "install-deps: cargo is missing; install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ] && have_cmd sudo; then sudo=sudo; fi
if [ ${#need[@]} -eq 0 ]; then
  if [ "$what" = test ] || [ "$what" = bench ]; then fetch_kubectl_120; fetch_python_client; fi
  exit 0
fi

if ! have_cmd apt-get; then
  echo "install-deps: missing ${need[*]} (Debian package names); this machine has no apt-get," >&2
  echo "install-deps: so install the equivalents with your package manager and run again" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  if have_cmd sudo; then sudo=sudo; else
    echo "install-deps: need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1
  fi
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if [ "$what" = test ] || [ "$what" = bench ]; then fetch_kubectl_120; fetch_python_client; fi
