#!/usr/bin/env bash
# build-images.sh OUTDIR
#
# Builds the integration-test image the way real images are built: umoci
# unpacks a bundle, the rootfs is changed with ordinary tools, and umoci
# repack computes the diff layer (with whiteouts); one layer is written by GNU
# tar and appended verbatim with `umoci raw add-layer`. Then skopeo makes
# variants with other encodings and containers.
#
# Output (all images hold the same layers, i.e. the same diff_ids):
#   OUTDIR/gzip/               OCI layout, tag "latest", gzip layers (umoci)
#   OUTDIR/zstd/               OCI layout, tag "latest", zstd layers (skopeo)
#   OUTDIR/tar/                OCI layout, tag "latest", uncompressed layers
#   OUTDIR/oci-archive.tar     oci-archive, tag "latest"
#   OUTDIR/docker-archive.tar  docker-archive, ocimount/test:latest
#   OUTDIR/ref/rootfs          reference extraction: umoci unpack of gzip/
#   OUTDIR/facts               names of a few paths the tests poke at
#
# Needs root (mknod, chown, setcap), umoci, skopeo, GNU tar, busybox-static,
# setcap, setfattr. Takes well under a minute.
set -euo pipefail
export LC_ALL=C.UTF-8 TZ=UTC

out=$(realpath -m "$1")
mkdir -p "$out"
work=$out/work
rm -rf "$work" "$out/gzip" "$out/zstd" "$out/tar" "$out/ref" \
	"$out/oci-archive.tar" "$out/docker-archive.tar"
mkdir -p "$work"
lay=$out/gzip
bundle=$work/bundle
R=$bundle/rootfs

umoci init --layout "$lay"
umoci new --image "$lay:latest"
umoci unpack --image "$lay:latest" "$bundle"

layer() { # layer DESCRIPTION: commit the rootfs changes as one diff layer
	umoci repack --refresh-bundle --history.created_by "build-images.sh: $1" \
		--image "$lay:latest" "$bundle"
}

# --- layer 1: busybox with its applet symlinks, a minimal /etc ----------------
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,dev,var/empty}
chmod 0700 "$R/root"
chmod 1777 "$R/tmp"
install -m 0755 /bin/busybox "$R/bin/busybox"
for app in $(/bin/busybox --list-full); do
	[ -e "$R/$app" ] || [ -L "$R/$app" ] || ln -s /bin/busybox "$R/$app"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
echo ocimount-test >"$R/etc/hostname"
layer "busybox"

# --- layer 2: a real host tree with thousands of files, big data files -------
mkdir -p "$R/usr/share"
ncopied=0
for d in /usr/share/perl /usr/share/zoneinfo; do
	if [ -d "$d" ]; then
		cp -a "$d" "$R/usr/share/"
		ncopied=$((ncopied + 1))
	fi
done
[ "$ncopied" -gt 0 ] || { echo "no host tree to copy" >&2; exit 1; }
mkdir -p "$R/data/dir2file/b" "$R/data/todelete/y" "$R/data/opq/old2/sub"
# 6 MiB incompressible + 12 MiB compressible: several 4 MiB checkpoint spans.
head -c 6291456 /dev/urandom >"$R/data/random.bin"
seq 1 1700000 | head -c 12582912 >"$R/data/seq.txt"
echo a >"$R/data/dir2file/a"
echo c >"$R/data/dir2file/b/c"
echo file >"$R/data/file2dir"
echo x >"$R/data/todelete/x"
echo z >"$R/data/todelete/y/z"
echo "lower layer file" >"$R/data/lowerfile"
echo "lower layer file for umoci" >"$R/data/lowerfile2"
echo old1 >"$R/data/opq/old1"
echo old >"$R/data/opq/old2/sub/f"
echo keep >"$R/data/modified"
layer "host tree and data"

# --- layer 3: deletions (whiteouts) and a modification -----------------------
rm -rf "$R/data/todelete"
rm -f "$R/data/random.bin"
rm -rf "$R/usr/share/zoneinfo/Antarctica" "$R/usr/share/perl/5.36/Pod" 2>/dev/null || true
rm -f "$R/usr/share/zoneinfo/Europe/Paris" "$R/bin/ls"
echo changed >"$R/data/modified"
head -c 3145728 /dev/urandom >"$R/data/random2.bin"
layer "deletions"

# --- layer 4: a directory becomes a file, a file becomes a directory --------
rm -rf "$R/data/dir2file"
echo "was a directory" >"$R/data/dir2file"
rm -f "$R/data/file2dir"
mkdir "$R/data/file2dir"
echo "was a file" >"$R/data/file2dir/inside"
layer "type changes"

# --- layer 5: special files and metadata --------------------------------------
S=$R/special
mkdir -p "$S/sub" "$S/emptydir"
# Hard links within the layer and a new link to a lower layer's file.
echo "hardlinked" >"$S/hl1"
ln "$S/hl1" "$S/hl2"
ln "$S/hl1" "$S/sub/hl3"
ln "$R/data/lowerfile2" "$S/hl_to_lower"
# Symlinks: dangling, absolute, relative, long target.
ln -s /nonexistent/target "$S/dangling"
ln -s /bin/busybox "$S/abs"
ln -s ../data/seq.txt "$S/rel"
long=$(printf 'long-target-component/%.0s' $(seq 1 40))
ln -s "$long" "$S/longlink"
# Mode bits.
echo suid >"$S/setuid" && chmod 4755 "$S/setuid"
echo sgid >"$S/setgid" && chmod 2711 "$S/setgid"
echo all >"$S/allbits" && chmod 7777 "$S/allbits"
mkdir "$S/sticky" && chmod 1777 "$S/sticky"
mkdir "$S/sgiddir" && chmod 2775 "$S/sgiddir"
echo secret >"$S/mode000" && chmod 000 "$S/mode000"
mkdir "$S/dir000" && echo hidden >"$S/dir000/f" && chmod 000 "$S/dir000"
# Extended attributes: a file capability and user.* (binary too).
cp "$R/bin/busybox" "$S/ping"
setcap cap_net_raw+ep "$S/ping"
echo xattrs >"$S/xattrs"
setfattr -n user.text -v "hello world" "$S/xattrs"
setfattr -n user.binary -v 0x00ff7f80010203 "$S/xattrs"
setfattr -n user.dir -v on-a-dir "$S/sub"
# Special files.
mkfifo "$S/fifo"
mknod "$S/null" c 1 3
mknod "$S/loop7" b 7 0
# Owners, including ones past 16 and 21 bits and (uid_t)-2.
for id in 1000 70000 4294967294; do
	echo "$id" >"$S/owned-$id"
	chown "$id:$id" "$S/owned-$id"
done
chown -h 1000:70000 "$S/dangling"
# Names: UTF-8, a 255-byte component, a path longer than 255 bytes.
echo utf8 >"$S/ünïcödé-日本語-🙂"
n255=$(printf 'n%.0s' $(seq 1 255))
echo 255 >"$S/$n255"
d1=$(printf 'a%.0s' $(seq 1 200))
d2=$(printf 'b%.0s' $(seq 1 200))
mkdir -p "$S/$d1/$d2"
echo deep >"$S/$d1/$d2/deep-file"
: >"$S/empty"
# Times last: epoch 0, the year 2100, nanoseconds (files, dirs, symlinks).
touch -d @0 "$S/empty"
touch -d '2100-01-01 00:00:00' "$S/owned-1000"
touch -d @1700000000.123456789 "$S/xattrs"
touch -h -d @1600000000.5 "$S/abs"
touch -d @1500000000.000000001 "$S/emptydir"
touch -d @0 "$S"
layer "special files"

# --- layer 6: written by GNU tar: opaque whiteout, link to a lower file -----
st=$work/l6
mkdir -p "$st/data/opq"
echo new >"$st/data/opq/new"
: >"$st/data/opq/.wh..wh..opq"
# umoci repack stores whole seconds only; GNU tar's PAX headers keep
# nanoseconds, so sub-second and out-of-range times live in this layer.
echo nanos >"$st/data/nanos" && touch -d @1700000000.123456789 "$st/data/nanos"
echo y2100 >"$st/data/y2100" && touch -d @4102444800.999999999 "$st/data/y2100"
echo pre1970 >"$st/data/pre1970" && touch -d @-1 "$st/data/pre1970"
touch -d @1600000000.000000001 "$st/data/opq"
cp -a "$R/data/lowerfile" "$st/data/lowerfile"
ln "$st/data/lowerfile" "$st/data/hl_to_lower_gnutar"
# List names explicitly so data/lowerfile is archived first and
# hl_to_lower_gnutar becomes a hardlink entry; deleting the first leaves a
# link whose target only exists in a lower layer, which GNU tar cannot make
# directly.
(cd "$st" && tar --format=posix --numeric-owner --no-recursion -cf "$work/l6.tar" \
	data data/opq data/opq/.wh..wh..opq data/opq/new data/nanos data/y2100 data/pre1970 \
	data/lowerfile data/hl_to_lower_gnutar)
tar --delete -f "$work/l6.tar" data/lowerfile
umoci raw add-layer --history.created_by "build-images.sh: GNU tar layer" \
	--image "$lay:latest" "$work/l6.tar"
umoci gc --layout "$lay"

# --- reference extraction ----------------------------------------------------
umoci unpack --image "$lay:latest" "$out/ref"

# --- variants -------------------------------------------------------------------
sk() { skopeo --insecure-policy copy --quiet "$@"; }
sk --dest-compress-format zstd --dest-compress oci:"$lay":latest oci:"$out/zstd":latest
grep -q 'tar+zstd' "$out/zstd"/blobs/sha256/* || { echo "skopeo wrote no zstd layer" >&2; exit 1; }
sk --dest-decompress oci:"$lay":latest dir:"$work/dir"
sk --dest-oci-accept-uncompressed-layers dir:"$work/dir" oci:"$out/tar":latest
grep -q 'layer.v1.tar"' "$out/tar"/blobs/sha256/* || { echo "skopeo wrote no uncompressed layer" >&2; exit 1; }
sk oci:"$lay":latest oci-archive:"$out/oci-archive.tar":latest
sk oci:"$lay":latest docker-archive:"$out/docker-archive.tar":ocimount/test:latest

cat >"$out/facts" <<FACTS
n255=special/$n255
deep=special/$d1/$d2/deep-file
FACTS
rm -rf "$work"
echo "built images in $out"
