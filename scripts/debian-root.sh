# An Arm Debian bookworm root with Python 3.11 and numpy, made without Arm hardware, a chroot or
# binfmt_misc, for running Python under qemu-user (sourced by scripts/test-aarch64-python.sh and
# scripts/build-arm-wheels.sh; the caller defines die MESSAGE and sources scripts/lib.sh).
#
# debian_root DEBIAN_ARCH ROOT [MIRROR]: makes ROOT (arm64 or armhf) unless it is already there.
# debootstrap's first stage (--foreign: download and unpack only) fetches python3.11,
# libpython3.11-dev (the headers qbinfer._core is compiled against) and python3-numpy with their
# dependencies, and every fetched package is unpacked with dpkg-deb, which is all that running
# Python from it needs (arm64: about 56 MB download, 280 MB on disk; kept for reruns). The root
# has no pip: scripts/build-arm-wheels.sh runs pip from pip's own wheel.
debian_root() {
  local arch=$1 root=$2 mirror=${3:-http://deb.debian.org/debian}
  [[ -f "$root/.qbinfer-ready" ]] && return 0
  local triplet
  case $arch in
    arm64) triplet=aarch64-linux-gnu ;;
    armhf) triplet=arm-linux-gnueabihf ;;
    *) die "debian_root: unknown Debian architecture '$arch' (arm64 or armhf)" ;;
  esac
  echo "$arch Debian bookworm root in $root (debootstrap --foreign, then dpkg-deb -x)"
  rm -rf "$root"
  mkdir -p "$(dirname "$root")"
  # --foreign: download and unpack only, no chroot (that would need binfmt_misc for qemu).
  logged "$root.debootstrap.log" debootstrap --foreign --arch="$arch" \
    --variant=minbase --include=python3.11-minimal,libpython3.11-stdlib,libpython3.11-dev,python3-numpy \
    bookworm "$root" "$mirror"
  # The first stage unpacks only the essential packages; the rest wait in the archive cache for
  # the second stage, which needs a chroot. Unpacking them all is enough to run Python.
  local deb
  for deb in "$root"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
  rm -f "$root"/var/cache/apt/archives/*.deb # no longer needed
  # numpy links libblas.so.3 / liblapack.so.3, links that update-alternatives makes in the
  # packages' postinst scripts, which never ran.
  local lib=$root/usr/lib/$triplet
  ln -sfn blas/libblas.so.3 "$lib/libblas.so.3"
  ln -sfn lapack/liblapack.so.3 "$lib/liblapack.so.3"
  touch "$root/.qbinfer-ready"
}
