// Package overlay merges layer indexes, in order, into the union tree of
// an image with the OCI image-spec's rules (layer.md: whiteouts, opaque
// directories, hardlinks, parent directories implied by deeper entries),
// and answers every question the filesystem asks of that tree: lookups,
// attributes, directory listings, and where a file's bytes are. It never
// imports go-fuse: fs is a thin adapter over a Tree.
//
// # Data flow
//
// Merge takes one Layer per image layer (its layerindex.Index and the
// random access to its uncompressed stream) and builds a Tree: flat
// arrays of nodes (names, parents, children ranges) and inodes (kind,
// mode, owner, size, where the data lies: layer and offset), one string
// blob and the xattrs. MergeRaw builds one layer's own tree, whiteouts
// shown, for forensic views. A Tree serializes to a tree file
// (MarshalBinary) that LoadTreeFile maps and uses in place, so a warm
// mount (and a cold one, once written) serves file-backed pages and no
// merge heap. Open gives random access to a file's bytes through its
// layer's content; BackingFile lets FUSE splice from a local file.
//
// # Invariants
//
//   - Merging is deterministic: the same layers give the same tree, node
//     IDs and inode numbers included (the kernel and the tree cache rely
//     on it).
//   - Paths are cleaned and confined to the root: "..", absolute names and
//     symlinked parents never reach outside the image.
//   - A tree file is used only with the exact layers (digests, DiffIDs,
//     sizes) it was made from, and only if its checksum and every index in
//     it check out; otherwise it is rebuilt.
//   - Content from a published (registry) index is served only after the
//     tar header in front of it matches the entry (Layer.CheckHeaders).
//
// # Concurrency
//
// A Tree is immutable once built and safe for concurrent use without
// locks; the per-inode "header checked" bits are atomics.
package overlay
