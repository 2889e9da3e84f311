package overlay

import "strings"

// WhiteoutKind is what an entry's name means to the union rules. The merge
// and every forensic command classify names with ClassifyName only, so the
// ".wh." conventions have one owner.
type WhiteoutKind uint8

const (
	// NotWhiteout: an ordinary entry. Names below a directory called
	// ".wh.X" are ordinary too: umoci and containerd take a ".wh.X" entry
	// (of any type) as the whiteout of X, and then create the entries
	// below it, with ".wh.X" as an implied parent directory.
	NotWhiteout WhiteoutKind = iota
	// Whiteout: ".wh.X" hides X of the lower layers.
	Whiteout
	// Opaque: ".wh..wh..opq" hides all lower children of its directory.
	Opaque
	// AufsMeta: ".wh..wh.X" other than the opaque marker is AUFS
	// bookkeeping (.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph): no effect,
	// never shown, as Docker's extractor does.
	AufsMeta
	// AufsHidden: an entry below an AUFS metadata directory (the
	// hardlink store .wh..wh.plnk/): never shown, but hardlinks of the
	// same layer may name it.
	AufsHidden
	// BadWhiteout: ".wh.", ".wh.." or ".wh...": a whiteout of nothing,
	// of "." or of "..": the merge refuses the layer.
	BadWhiteout
)

const (
	whPrefix  = ".wh."
	whOpaque  = ".wh..wh..opq"
	whMetaPfx = ".wh..wh." // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not whiteouts
)

func (k WhiteoutKind) String() string {
	switch k {
	case NotWhiteout:
		return "entry"
	case Whiteout:
		return "whiteout"
	case Opaque:
		return "opaque"
	case AufsMeta:
		return "aufs metadata"
	case AufsHidden:
		return "aufs hidden"
	case BadWhiteout:
		return "invalid whiteout"
	}
	return "WhiteoutKind(?)"
}

// ClassifyName says what a cleaned entry name (layerindex.CleanPath form:
// no leading "/", "", "." or ".." components) means to the union rules,
// and what it applies to: the hidden path for a Whiteout, the directory
// for an Opaque marker ("" is the root).
func ClassifyName(name string) (kind WhiteoutKind, target string) {
	dir, base := splitPath(name)
	if hasAufsDir(dir) {
		return AufsHidden, ""
	}
	if !strings.HasPrefix(base, whPrefix) {
		return NotWhiteout, ""
	}
	switch {
	case base == whOpaque:
		return Opaque, dir
	case strings.HasPrefix(base, whMetaPfx):
		return AufsMeta, ""
	}
	t := base[len(whPrefix):]
	if t == "" || t == "." || t == ".." {
		return BadWhiteout, ""
	}
	if dir == "" {
		return Whiteout, t
	}
	return Whiteout, dir + "/" + t
}

// hasAufsDir reports whether a directory path has a component that is AUFS
// metadata (.wh..wh.*): such directories are never shown, nor anything
// below them.
func hasAufsDir(dir string) bool {
	return strings.HasPrefix(dir, whMetaPfx) || strings.Contains(dir, "/"+whMetaPfx)
}
