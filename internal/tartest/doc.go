// Package tartest builds tar layers and OCI image layouts in memory for
// tests. It is imported only from _test.go files (it takes a testing.TB and
// fails the test on any error), so that every union-semantics case can be a
// small table entry instead of a fixture file.
//
// # Entries
//
// A layer is a list of [Entry] values turned into a tar stream by [Tar]:
//
//	layer := tartest.Tar(t,
//		tartest.Dir("etc", 0o755),
//		tartest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644, tartest.Owner(0, 0)),
//		tartest.Symlink("etc/mtab", "/proc/mounts"),
//		tartest.Hardlink("etc/passwd.bak", "etc/passwd"),
//		tartest.Whiteout("etc/shadow"),  // etc/.wh.shadow
//		tartest.Opaque("var/cache"),     // var/cache/.wh..wh..opq
//	)
//
// Constructors: [Dir], [File], [Symlink], [Hardlink], [Char], [Block],
// [FIFO], [Whiteout], [Opaque], [Raw] (any *tar.Header, including hostile
// names, written by archive/tar), [RawBlocks] (verbatim 512-byte blocks, for
// what archive/tar refuses to write), and [Sparse] (GNU old-style and PAX
// 0.1/1.0 sparse files, hand-encoded because archive/tar cannot write them).
// [HeaderBlock] encodes a single ustar/GNU header block by hand.
//
// Options ([Opt]) adjust the header: [Owner], [Names], [MTime] (sub-second
// times switch the entry to PAX so the nanoseconds survive), [Xattr]
// (SCHILY.xattr.* PAX record; binary values are fine), [PAX], [Format],
// [ModeBits].
//
// Defaults: uid/gid 0, mtime [DefaultMTime], format chosen by archive/tar
// (USTAR when it fits, else PAX). Dir names get a trailing "/" as real tar
// writers emit.
//
// # Compression
//
// [Compress] encodes a tarball as "tar" (identity), "gzip" or "zstd";
// [CompressMulti] splits it into several gzip members / zstd frames, and
// [ZstdSkippable] prepends a zstd skippable frame.
//
// # Image layouts
//
// [WriteOCILayout] writes an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) with correct digests, sizes and diff_ids and returns the
// manifest digest of the first image. [WriteOCILayoutInfo] returns every
// descriptor for tests that then corrupt a blob. [ImageLayer] has override
// fields (MediaType, Blob, DiffID) to build broken images on purpose:
//
//	info := tartest.WriteOCILayoutInfo(t, dir, tartest.Image{
//		Ref:    "latest",
//		Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: layer}},
//	})
//	os.Remove(tartest.BlobPath(dir, info[0].Layers[0].Digest)) // missing blob
//
// Images sharing a non-empty Ref are grouped under one nested image index
// (a multi-platform image); calling WriteOCILayout again on the same dir
// adds to its index.json.
package tartest
