# Helpers shared by scripts/test-aarch64.sh and scripts/test-aarch64-python.sh (sourced; the
# caller defines die MESSAGE).

have() { command -v "$1" >/dev/null 2>&1; }

# logged LOG CMD...: runs CMD with its output in LOG; on failure shows the log's end and dies.
logged() {
  local log=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    die "'$*' failed (full log: $log)"
  fi
}

# apt_install PKG...: installs Debian packages, as root or through sudo. apt-get update runs only
# when the package lists do not know the packages (a fresh container has no lists at all).
apt_install() {
  (($#)) || return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    have sudo || die "need $*: run as root or install them (apt-get install $*)"
    sudo=(sudo)
  fi
  echo "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y --no-install-recommends "$@" >/tmp/qbinfer-apt.log 2>&1; then
    logged /tmp/qbinfer-apt.log "${sudo[@]}" apt-get update
    logged /tmp/qbinfer-apt.log "${sudo[@]}" apt-get install -y --no-install-recommends "$@"
  fi
}
