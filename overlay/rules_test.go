package overlay_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// rulesDigests records, for each overlay.MergeRulesVersion, the digest of
// what the merge makes of rulesCorpus (rulesListing). Merged trees are
// cached on disk under the tree file's header, which carries the rules
// version: a change of what Merge or MergeRaw produce for any input must
// come with a new version, or warm mounts keep serving trees made by the
// old rules. Add a row; never edit an old one.
var rulesDigests = map[uint32]string{
	1: "4d0eb935003ade507ee4626805fc0e9307f2740429b8053c4358b741df55aba6",
	2: "0bbe5da758206055bc8a2cc2a3dad2cec9c719d03e3d9989cbe765003752f199", // entries below .wh.X dirs shown
	3: "0bbe5da758206055bc8a2cc2a3dad2cec9c719d03e3d9989cbe765003752f199", // TOC bookkeeping entries hidden (Layer.Hide; the corpus has none)
}

// rulesCorpus is a fixed set of layer stacks that exercise every union
// rule: whiteouts of files and directories, opaque directories (the root
// too), entries below ".wh.X" directories, AUFS metadata and its hardlink
// store, hardlinks to lower files and to whited-out or replaced targets,
// directories replaced by files and back, symlinked parents inside and
// outside the root, implicit parents, duplicates, metadata-only
// re-declarations, and layers the merge refuses. Extend it when a rule is
// added (and record a new digest under a new version).
func rulesCorpus() [][][]tartest.Entry {
	mt := tartest.MTime(time.Unix(1500000000, 7))
	base := []tartest.Entry{
		tartest.Dir("d", 0o700, mt), tartest.File("d/old", "old", 0o644), tartest.File("x", "x", 0o644),
		tartest.Dir("a", 0o755), tartest.Dir("a/b", 0o755), tartest.File("a/b/k", "k", 0o644),
		tartest.Symlink("p", "../../../../tmp/x"), tartest.Symlink("abs", "/a/b"), tartest.Symlink("rel", "a/b"),
		tartest.Dir("e", 0o755), tartest.File("e/f", "f", 0o644), tartest.Hardlink("e/hf", "e/f"),
		tartest.Symlink("loop1", "loop2"), tartest.Symlink("loop2", "loop1"),
		tartest.File("big", strings.Repeat("B", 40), 0o600, tartest.Owner(1000, 1000), tartest.Xattr("user.k", "v")),
	}
	return [][][]tartest.Entry{
		{base, {tartest.Whiteout("x"), tartest.Whiteout("a/b"), tartest.Whiteout("nonexistent"), tartest.Whiteout("e/f")}},
		{base, {tartest.Dir("a", 0o750, mt), tartest.Opaque("a"), tartest.File("a/new", "new", 0o644)}},
		{base, {tartest.Opaque("."), tartest.File("only", "only", 0o644)}},
		// ".wh.X" directories: X is whited out and entries below appear
		// under an implicit ".wh.X" (umoci, containerd).
		{base, {tartest.Dir(".wh.d", 0o711, tartest.Owner(5, 6), mt), tartest.File(".wh.d/child", "child", 0o600)}},
		{base, {tartest.File(".wh.d/child", "child", 0o600), tartest.File(".wh.d/.wh.child", "", 0o600), tartest.File(".wh.x/.wh.y", "", 0o644)}},
		{base, {tartest.File(".wh.d", "", 0o644), tartest.File(".wh.d/child", "c", 0o644), tartest.Hardlink("hl", ".wh.d/child"),
			tartest.File("a/.wh.b/c/d", "deep", 0o644), tartest.Dir(".wh.e/sub", 0o750), tartest.File(".wh.e/sub/z", "z", 0o644)}},
		// AUFS metadata and its hardlink store.
		{base, {tartest.Dir(".wh..wh.plnk", 0o700), tartest.File(".wh..wh.plnk/1.2", "linked", 0o640), tartest.Hardlink("aufs-a", ".wh..wh.plnk/1.2"),
			tartest.File(".wh..wh.aufs", "", 0o644), tartest.Dir(".wh..wh.orph", 0o700)}},
		// Hardlinks across layers, to replaced and whited-out targets.
		{base, {tartest.Hardlink("h-lower", "big"), tartest.File("e/f", "replaced", 0o644)}, {tartest.Whiteout("big"), tartest.Hardlink("h2", "h-lower")}},
		{{tartest.File("t", "t", 0o644), tartest.Hardlink("u", "t")}, {tartest.Whiteout("t"), tartest.Hardlink("v", "t")}},
		// Directory replaced by a file and back, type changes in a layer.
		{base, {tartest.File("a", "a file", 0o644), tartest.Dir("x", 0o711), tartest.File("x/y", "y", 0o644)}, {tartest.Dir("a", 0o755), tartest.File("a/again", "again", 0o644)}},
		{{tartest.File("q", "q", 0o644), tartest.Dir("q", 0o755), tartest.Dir("r", 0o755), tartest.File("r/c", "c", 0o644), tartest.File("r", "r is a file", 0o644)}},
		// Symlinked parents: inside, absolute, escaping the root, loops.
		{base, {tartest.File("p/evil", "evil", 0o644), tartest.File("abs/viaabs", "1", 0o644), tartest.File("rel/viarel", "2", 0o644),
			tartest.Symlink("q", "/../../e"), tartest.File("q/g", "g", 0o644)}},
		{base, {tartest.File("loop1/x", "x", 0o644)}},
		{base, {tartest.Whiteout("p/nothing"), tartest.Whiteout("abs/k"), tartest.Dir("rel", 0o755), tartest.Whiteout("rel/k")}},
		// rm f; mkdir f recorded with an opaque marker over a lower symlink.
		{base, {tartest.Dir("abs", 0o755), tartest.Opaque("abs"), tartest.File("abs/n", "n", 0o644)}},
		// Implicit parents, duplicates, metadata after children, "./".
		{{tartest.File("i/j/k", "deep", 0o644), tartest.File("dup", "1", 0o644), tartest.File("dup", "22", 0o600),
			tartest.File("m/x", "x", 0o644), tartest.Dir("m", 0o700, tartest.Owner(1, 1), mt), tartest.Dir(".", 0o711, mt)}},
		{base, {tartest.Dir("a", 0o700, tartest.Owner(1000, 70000), tartest.Xattr("user.d", "v"), mt), tartest.File("a/y", "y", 0o644)}},
		{base, {tartest.Whiteout("x"), tartest.File("x", "new", 0o644), tartest.File("e/f", "newer", 0o644), tartest.Whiteout("e/f")}},
		// Refused: bad whiteouts, a file used as a directory, a dangling
		// hardlink, a hardlink to a directory.
		{base, {tartest.File(".wh..", "", 0o644)}},
		{base, {tartest.File("x/under-a-file", "u", 0o644)}},
		{base, {tartest.Hardlink("dangling", "nowhere")}},
		{base, {tartest.Hardlink("hdir", "a")}},
	}
}

// rulesListing merges every stack of the corpus (and each of its layers
// alone with MergeRaw) and lists the results: one dump line per node with
// the layer entry that provides it, or which rule refused the stack.
func rulesListing(t *testing.T) string {
	var b strings.Builder
	for i, stack := range rulesCorpus() {
		var tars [][]byte
		for _, l := range stack {
			tars = append(tars, tartest.Tar(t, l...))
		}
		ls, err := buildLayers(t, tars...)
		if err != nil {
			t.Fatalf("stack %d: %v", i, err)
		}
		list := func(what string, tr *overlay.Tree, err error) {
			fmt.Fprintf(&b, "== stack %d %s\n", i, what)
			if err != nil {
				fmt.Fprintf(&b, "error: %s\n", ruleOf(err))
				return
			}
			lines := dump(t, tr, true)
			for id := overlay.RootID; tr.Valid(id); id++ {
				l, e := tr.Source(id)
				fmt.Fprintf(&b, "%s %d:%d\n", tr.Path(id), l, e)
			}
			b.WriteString(strings.Join(lines, "\n"))
			b.WriteString("\n")
		}
		tr, err := overlay.Merge(ls)
		list("merge", tr, err)
		for li := range ls {
			tr, err := overlay.MergeRaw(ls[li])
			list(fmt.Sprintf("raw %d", li), tr, err)
		}
	}
	return b.String()
}

// ruleOf names the sentinel a merge error wraps: the wording of messages
// may change without the rules changing.
func ruleOf(err error) string {
	for _, s := range []error{overlay.ErrBadWhiteout, overlay.ErrNotDir, overlay.ErrLinkTarget, overlay.ErrSymlinkLoop, layerindex.ErrUnsafePath} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "other"
}

// TestMergeRulesVersion fails when what the merge makes of the corpus
// changes while MergeRulesVersion stays: cached trees made by the old rules
// would then be served by warm mounts.
func TestMergeRulesVersion(t *testing.T) {
	listing := rulesListing(t)
	sum := sha256.Sum256([]byte(listing))
	got := hex.EncodeToString(sum[:])
	want, ok := rulesDigests[overlay.MergeRulesVersion]
	switch {
	case !ok:
		t.Fatalf("no digest recorded for MergeRulesVersion %d: add %d: %q to rulesDigests", overlay.MergeRulesVersion, overlay.MergeRulesVersion, got)
	case got != want:
		t.Fatalf("the merge rules changed (the corpus now merges to %s, version %d recorded %s): bump overlay.MergeRulesVersion and record the new digest in rulesDigests (never edit an old row); listing:\n%s",
			got, overlay.MergeRulesVersion, want, listing)
	}
	for v := range rulesDigests {
		if v > overlay.MergeRulesVersion {
			t.Errorf("rulesDigests has version %d, beyond MergeRulesVersion %d", v, overlay.MergeRulesVersion)
		}
	}
}
