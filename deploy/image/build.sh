#!/usr/bin/env bash
# Builds the paystream OCI image without a Docker daemon: buildah (Debian's package) with
# the vfs storage driver, from scratch — no base image is pulled. The image holds the
# binary, the shared libraries it loads (as ldd resolves them on this machine), the CA
# certificates, and /etc/passwd and /etc/group with the non-root user 65532.
#
#   deploy/image/build.sh [BINARY] [OUT.tar] [TAG]
#     BINARY   default build/release/paystream
#     OUT.tar  default build/image/paystream-oci.tar (an OCI archive: skopeo copy,
#              podman load, or `buildah push` it to a registry)
#     TAG      default paystream:<version the binary reports>
#
# Needs root (it writes the container's files directly; as a user: buildah unshare
# deploy/image/build.sh) and Debian's buildah: apt-get install buildah.
# Runtime settings the chart applies: runAsNonRoot (the image's user is 65532 too) and
# readOnlyRootFilesystem (the binary writes only to --data-dir and /tmp, emptyDirs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${1:-$ROOT/build/release/paystream}"
OUT="${2:-$ROOT/build/image/paystream-oci.tar}"
[ -x "$BIN" ] || { echo "build.sh: no executable $BIN (cmake --build --preset release)" >&2; exit 2; }
VERSION="$("$BIN" --version | awk '{print $NF}')"
TAG="${3:-paystream:$VERSION}"
command -v buildah >/dev/null || { echo "build.sh: buildah missing (apt-get install buildah)" >&2; exit 2; }

# Private storage under build/: nothing shared with other users of buildah on the machine.
STORE="$ROOT/build/image/storage"
B=(buildah --storage-driver vfs --root "$STORE/root" --runroot "$STORE/run")
mkdir -p "$(dirname "$OUT")" "$STORE"

ctr="$("${B[@]}" from --name "paystream-build-$$" scratch)"
cleanup() { [ -z "$ctr" ] || "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# The root filesystem, written into the container's vfs directory (root owns everything
# but /data; nothing is writable for the user except /data and /tmp).
root_fs="$("${B[@]}" mount "$ctr")"
install -D -m 0755 "$BIN" "$root_fs/usr/local/bin/paystream"
# Every shared library ldd resolves, at the same path, with its mode (the loader must stay
# executable); libgcc_s is dlopen()ed by glibc (thread cancellation), so ldd omits it.
libs="$(ldd "$BIN" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}')"
gcc_s="$(ldconfig -p | awk '/libgcc_s\.so\.1 /{print $NF; exit}')"
for lib in $libs $gcc_s; do
  real="$(readlink -f "$lib")"
  install -D -m "$(stat -c %a "$real")" "$real" "$root_fs$lib"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root_fs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/nonexistent\nnonroot:x:65532:65532:nonroot:/data:/nonexistent\n' > "$root_fs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root_fs/etc/group"
printf 'hosts: files dns\n' > "$root_fs/etc/nsswitch.conf"
chmod 0644 "$root_fs/etc/passwd" "$root_fs/etc/group" "$root_fs/etc/nsswitch.conf"
install -d -m 1777 "$root_fs/tmp"
install -d -m 0700 -o 65532 -g 65532 "$root_fs/data"
chmod 0755 "$root_fs"
"${B[@]}" umount "$ctr" >/dev/null

"${B[@]}" config \
  --user 65532:65532 \
  --workingdir /data \
  --entrypoint '["/usr/local/bin/paystream"]' \
  --cmd '["--help"]' \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --port 8080 --port 9100 \
  --label org.opencontainers.image.title=paystream \
  --label "org.opencontainers.image.version=$VERSION" \
  --label "org.opencontainers.image.revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
  "$ctr"
rm -f "$OUT"
"${B[@]}" commit --quiet --format oci --rm "$ctr" "oci-archive:$OUT:$TAG" >/dev/null
ctr=""

# Check: the image's files alone run the binary as the image's user (no library missing).
check="$(mktemp -d)"
trap 'rm -rf "$check"' EXIT
tar -xf "$OUT" -C "$check"
manifest="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"].split(":")[1])' "$check/index.json")"
mkdir "$check/rootfs"
for layer in $(python3 -c 'import json,sys; print(" ".join(l["digest"].split(":")[1] for l in json.load(open(sys.argv[1]))["layers"]))' "$check/blobs/sha256/$manifest"); do
  tar -xf "$check/blobs/sha256/$layer" -C "$check/rootfs"
done
user="$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(json.load(open(sys.argv[2]+m["config"]["digest"].split(":")[1]))["config"]["User"])' "$check/blobs/sha256/$manifest" "$check/blobs/sha256/")"
chroot --userspec="$user" "$check/rootfs" /usr/local/bin/paystream --version >/dev/null \
  || { echo "build.sh: the image cannot run its binary as $user" >&2; exit 1; }
echo "$OUT ($TAG, $(du -h "$OUT" | cut -f1))"
