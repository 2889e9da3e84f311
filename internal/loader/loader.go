// Package loader wires the one-way data flow blobs → layerindex → overlay:
// it opens an image, indexes all its layers in parallel (one verifying
// streaming pass each) and merges them into a tree ready to be served.
// cmd and the tests use it; fs never sees where bytes come from.
package loader

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/cache"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Options tune Load. The zero value works: without CacheDir, decoded zstd
// layers go to unlinked files in the system temp dir and die with the mount.
type Options struct {
	// CacheDir holds layer indexes (so a remount reads no layer bytes)
	// and decoded copies of zstd layers that have no usable frame
	// checkpoints; "" caches nothing.
	CacheDir string
	// Rebuild ignores cached indexes and trees (and overwrites them).
	Rebuild bool
	// KeepEntries keeps each layer's entry table in Image.Indexes (and
	// so skips the cached merged tree, which has none). A mount does not
	// need them once merged: the tree carries what reads need.
	KeepEntries bool
	// Logf, if set, receives non-fatal problems (a damaged cache file
	// that is being rebuilt, a cache write that failed); calls are
	// serialized.
	Logf func(format string, args ...any)
	// Span is the gzip/zstd checkpoint spacing (0: layerindex default).
	Span int64
	// SpanCacheBytes bounds the decoded-span cache (0: 64 MiB).
	SpanCacheBytes int64
	// SpanCache, if set, is used instead of a cache of the image's own,
	// and Image.Close leaves it open: a server that holds many images
	// (the containerd snapshotter) bounds their decoded spans together.
	// Spans are keyed by blob digest and checkpoint table (spanKey), so
	// images that share a layer share its spans, and two indexes of one
	// blob with different checkpoints never see each other's spans; a TOC
	// layer's chunks are keyed by blob and TOC digest (tocSpanKey), apart
	// from any built index of the same blob.
	SpanCache *layerindex.SpanCache
	// Jobs bounds parallel layer indexing (0: number of CPUs).
	Jobs int
	// Progress, if set, is called (from several goroutines) as layer i's
	// blob is read: done of total bytes. Layers served from the cache
	// report done == total at once.
	Progress func(layer int, done, total int64)
	// Prefetch keeps a registry layer's bytes in the range cache while
	// its index is built, so later reads fetch nothing.
	Prefetch bool
	// NoRemoteIndex skips looking for an index artifact published in the
	// registry (every uncached layer is then streamed once).
	NoRemoteIndex bool
	// RemoteIndex, if set, is told, once the layers are indexed, which
	// index artifact was found and how many of the layer indexes it
	// offered were used (the others were unusable, each logged with the
	// reason through Logf).
	RemoteIndex func(artifact digest.Digest, used, offered int)
	// View selects a forensic view instead of the whole image; only the
	// layers it needs are indexed.
	View View
	// NoTOC ignores the tables of contents of eStargz and zstd:chunked
	// layers: such layers are indexed by a pass like any other (what
	// `ocimount index` does, since only a pass checks the DiffID).
	NoTOC bool
	// TOCPrefetch, for a mount, fetches in the background (into the range
	// cache) the chunks of the files an eStargz image lists before its
	// prefetch landmark, or with Prefetch every chunk of its TOC layers.
	TOCPrefetch bool
}

// View is what tree Load builds: the merged image (the zero value), the
// image as it was after one layer, or one layer alone as stored. Layer
// numbers are 0-based positions in the manifest, as `ocimount inspect`
// and `ocimount index` print them.
type View struct {
	Kind  ViewKind
	Layer int
}

// ViewKind says which tree a View is.
type ViewKind uint8

const (
	ViewImage  ViewKind = iota // all layers merged
	ViewPrefix                 // layers 0..Layer merged
	ViewRaw                    // layer Layer alone, whiteouts visible (overlay.MergeRaw)
)

func (v View) String() string {
	switch v.Kind {
	case ViewPrefix:
		return fmt.Sprintf("layers ..%d", v.Layer)
	case ViewRaw:
		return fmt.Sprintf("layer %d raw", v.Layer)
	}
	return "image"
}

// ErrLayerRange: a view names a layer the image does not have.
var ErrLayerRange = errors.New("layer out of range")

// span returns the layers the view's tree is made from, [lo, hi).
func (v View) span(n int) (lo, hi int, err error) {
	if v.Kind == ViewImage {
		return 0, n, nil
	}
	if v.Layer < 0 || v.Layer >= n {
		return 0, 0, fmt.Errorf("%w: layer %d, the image has %d layers (0..%d)", ErrLayerRange, v.Layer, n, n-1)
	}
	if v.Kind == ViewRaw {
		return v.Layer, v.Layer + 1, nil
	}
	return 0, v.Layer + 1, nil
}

// treeKey is the cache key of the view's tree: the manifest digest for
// the image itself, else a digest of manifest and view, so that views of
// one image never collide with each other or with the image's tree.
func (v View) treeKey(manifest digest.Digest) digest.Digest {
	if v.Kind == ViewImage {
		return manifest
	}
	return digest.FromString(string(manifest) + "\x00view " + v.String())
}

func (v View) merge(layers []overlay.Layer) (*overlay.Tree, error) {
	if v.Kind == ViewRaw {
		return overlay.MergeRaw(layers[0])
	}
	return overlay.Merge(layers)
}

// Image is a loaded image: its metadata, its layer indexes and the merged
// tree. Close releases the files behind it.
type Image struct {
	Image   *blobs.Image
	Indexes []*layerindex.Index
	Tree    *overlay.Tree
	Cache   *layerindex.SpanCache
	// FromCache[i] says whether layer i's index came from the cache.
	FromCache []bool
	// Sources[i] says where layer i's index came from (see Source).
	Sources []Source
	closers []io.Closer
	// sharedCache: Cache is Options.SpanCache, closed by its owner.
	sharedCache bool
	// cancelPrefetch stops the TOC prefetch, prefetchDone is closed when
	// it has (nil: none).
	cancelPrefetch func()
	prefetchDone   chan struct{}
}

// Close waits for the span decodes and read-ahead still running (unless
// the span cache is shared: its owner closes it), then releases blob files
// and decoded caches.
func (im *Image) Close() error {
	if im.cancelPrefetch != nil {
		// Waited for last: closing the blobs ends a fetch in flight.
		im.cancelPrefetch()
		defer func() { <-im.prefetchDone }()
	}
	if im.Cache != nil && !im.sharedCache {
		im.Cache.Close()
	}
	var errs []error
	for _, c := range im.closers {
		errs = append(errs, c.Close())
	}
	if im.Image != nil {
		errs = append(errs, im.Image.Close())
	}
	return errors.Join(errs...)
}

// Source is where a layer's index came from.
type Source string

const (
	SourceBuilt    Source = "built"             // a pass over the layer, now
	SourceCached   Source = "cached"            // the cache (built here earlier)
	SourceArtifact Source = "ocimount artifact" // an index published in the registry (now or earlier)
	// else the TOC format's Source ("eStargz TOC", "zstd:chunked TOC")
)

// LayerError names the layer (position and digest) a failure belongs to.
type LayerError struct {
	Index  int
	Digest digest.Digest
	Err    error
}

func (e *LayerError) Error() string {
	d := string(e.Digest)
	if d == "" {
		d = "(digest unknown)"
	}
	return fmt.Sprintf("layer %d (blob %s): %v", e.Index, d, e.Err)
}
func (e *LayerError) Unwrap() error { return e.Err }

// Load opens src and returns the merged tree of the selected image.
func Load(ctx context.Context, src blobs.Source, bo blobs.Options, o Options) (_ *Image, err error) {
	if lf := o.Logf; lf != nil {
		// Layers are indexed in parallel; callers need not be.
		var mu sync.Mutex
		o.Logf = func(f string, a ...any) { mu.Lock(); defer mu.Unlock(); lf(f, a...) }
	}
	bi, err := blobs.OpenImage(ctx, src, bo)
	if err != nil {
		return nil, err
	}
	im := &Image{Image: bi}
	defer func() {
		if err != nil {
			im.Close()
		}
	}()
	if o.SpanCache != nil {
		im.Cache, im.sharedCache = o.SpanCache, true
	} else {
		cacheBytes := o.SpanCacheBytes
		if cacheBytes <= 0 {
			cacheBytes = 64 << 20
		}
		im.Cache = layerindex.NewSpanCache(cacheBytes)
	}

	n := len(bi.Layers)
	lo, hi, err := o.View.span(n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	fmts, err := layerFormats(bi, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	dir := cache.Dir{Root: o.CacheDir}
	if dir.Enabled() && !o.Rebuild && !o.KeepEntries {
		if loadWarm(bi, fmts, o, im) {
			return im, nil
		}
	}
	// A cold mount may follow one that was killed while writing a decoded
	// copy (gigabytes in a temp file): drop what dead processes left.
	for _, e := range dir.SweepTemps() {
		logf(o, "removed %s (%d bytes), left behind by an interrupted mount", e.Path, e.Size)
	}
	layers, err := indexAll(ctx, bi, fmts, lo, hi, dir, o, im)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	tree, err := o.View.merge(layers[lo:hi])
	if err != nil {
		var me *overlay.MergeError
		if errors.As(err, &me) && me.Layer+lo < n {
			me.Layer += lo
			err = &LayerError{Index: me.Layer, Digest: bi.Layers[me.Layer].Descriptor.Digest, Err: fmt.Errorf("entry %q: %w", me.Entry, me.Err)}
		}
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	im.Tree = tree
	if o.TOCPrefetch {
		im.startPrefetch(layers[lo:hi], o)
	}
	ids := make([]overlay.LayerID, 0, hi-lo)
	treeDir := dir
	for _, ix := range im.Indexes[lo:hi] {
		ids = append(ids, overlay.LayerID{Digest: ix.Digest, DiffID: ix.DiffID, UncompressedSize: ix.UncompressedSize})
		if ix.TOC != nil {
			// Its offsets are into the TOC's stream: a cached tree would
			// be served against the tar stream of a built index later.
			// (No warm path uses it either: TOC indexes are not cached.)
			treeDir = cache.Dir{}
		}
	}
	switch {
	case !o.KeepEntries:
		for _, ix := range im.Indexes[lo:hi] {
			ix.Entries = nil // the tree has what reads need; free the tables
		}
		if t := freeze(tree, ids, layers[lo:hi], treeDir, o.View.treeKey(bi.ManifestDigest), o); t != nil {
			im.Tree = t
			debug.FreeOSMemory() // the built tree's heap, now garbage
		}
	case treeDir.Enabled():
		// Forensics keep the entries and the built tree; the next mount
		// still finds the tree file.
		if b, err := tree.MarshalBinary(ids); err != nil {
			logf(o, "serializing the merged tree: %v", err)
		} else if err := dir.StoreTree(o.View.treeKey(bi.ManifestDigest), b); err != nil {
			logf(o, "caching the merged tree: %v", err)
		}
	}
	return im, nil
}

// startPrefetch fetches TOC layers' chunks ahead of reads, one layer
// after the other, in one goroutine that Close stops.
func (im *Image) startPrefetch(layers []overlay.Layer, o Options) {
	var rs []*layerindex.TOCReader
	var digests []digest.Digest
	for _, l := range layers {
		if r, ok := l.Content.(*layerindex.TOCReader); ok {
			rs = append(rs, r)
			digests = append(digests, l.Index.Digest)
		}
	}
	if len(rs) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, r := range rs {
			n, err := r.Prefetch(ctx, o.Prefetch)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				logf(o, "prefetch of blob %s stopped after %d chunks: %v", digests[i], n, err)
			}
		}
	}()
	im.cancelPrefetch, im.prefetchDone = cancel, done
}

// indexAll gets the index of every layer in [lo, hi): from the cache,
// from an index published in the registry, or from one verifying pass
// over the blob, in parallel (Options.Jobs at a time). One bad layer fails
// the image, and stops the other passes early.
func indexAll(ctx context.Context, bi *blobs.Image, fmts []*layerindex.Format, lo, hi int, dir cache.Dir, o Options, im *Image) ([]overlay.Layer, error) {
	n := len(bi.Layers)
	published, artifact := fetchPublished(ctx, bi, fmts, lo, hi, dir, o)
	var used atomic.Int64
	im.Indexes = make([]*layerindex.Index, n)
	im.FromCache = make([]bool, n)
	im.Sources = make([]Source, n)
	layers := make([]overlay.Layer, n)
	closers := make([]io.Closer, n)
	defer func() {
		for _, c := range closers {
			if c != nil {
				im.closers = append(im.closers, c)
			}
		}
	}()
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	// The first error a layer returns is the real failure: the others
	// only see the cancellation it causes.
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	// Largest blob first: the biggest layer's single-threaded pass is the
	// critical path of a cold mount, so it must not wait for a slot behind
	// small layers, which fill the other cores around it.
	order := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		order = append(order, i)
	}
	sort.SliceStable(order, func(a, b int) bool { return bi.Layers[order[a]].Blob.Size() > bi.Layers[order[b]].Blob.Size() })
	for _, i := range order {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			l := &bi.Layers[i]
			tf := layerindex.TOCFormatOf(fmts[i], l.Descriptor.Annotations)
			r, err := indexLayer(ctx, l, fmts[i], tf, o, published[cacheKey(l, fmts[i])])
			if err != nil {
				return &LayerError{Index: i, Digest: l.Descriptor.Digest, Err: err}
			}
			im.Indexes[i] = r.ix
			im.FromCache[i] = r.cached
			if r.published {
				used.Add(1)
			}
			closers[i] = r.closer
			// An index that came from the registry, now or on an earlier
			// mount, is checked against the layer's tar headers as files
			// are read.
			marked := r.cached && dir.Enabled() && dir.Published(cacheKey(l, fmts[i]))
			untrusted := r.published || marked
			layers[i] = overlay.Layer{Index: r.ix, Content: r.content, CheckHeaders: untrusted}
			switch {
			case r.ix.TOC != nil:
				// Chunk digests, not the tar headers, tie bytes to files.
				layers[i].CheckHeaders = false
				layers[i].Content = r.ix.TOC.NewReaderAt(unverifiedBlob(l.Blob), im.Cache, tocSpanKey(r.ix), tocDiskCache(l.Blob))
				im.Sources[i] = Source(r.ix.TOC.Format.Source)
			case untrusted:
				im.Sources[i] = SourceArtifact
			case r.cached:
				im.Sources[i] = SourceCached
			default:
				im.Sources[i] = SourceBuilt
			}
			if tf != nil {
				layers[i].Hide = tf.Hidden()
			}
			if r.content == nil && r.ix.TOC == nil {
				layers[i].Content = r.ix.Checkpoints.NewReaderAt(l.Blob, im.Cache, spanKey(r.ix))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if artifact != "" && o.RemoteIndex != nil {
		o.RemoteIndex(artifact, int(used.Load()), len(published))
	}
	return layers, nil
}

// freeze writes the merged tree's file (into the cache, or without one
// into an unnamed temp file) and maps it (see frozen). nil: the built tree
// stays, which costs memory, not correctness.
func freeze(tree *overlay.Tree, ids []overlay.LayerID, layers []overlay.Layer, dir cache.Dir, key digest.Digest, o Options) *overlay.Tree {
	b, err := tree.MarshalBinary(ids)
	if err != nil {
		logf(o, "serializing the merged tree: %v", err)
		return nil
	}
	if dir.Enabled() {
		if err := dir.StoreTree(key, b); err != nil {
			logf(o, "caching the merged tree: %v", err)
			return nil
		}
		p, _ := dir.TreePath(key)
		return frozen(func() (*overlay.Tree, error) { return overlay.LoadTreeFile(p, ids, layers) }, o)
	}
	t, err := cache.NewTemp(os.TempDir())
	if err != nil {
		return nil
	}
	defer t.Discard() // mapped: the pages live on until the process exits
	t.Unlink()
	if _, err := t.Write(b); err != nil {
		return nil
	}
	return frozen(func() (*overlay.Tree, error) { return overlay.MapTreeFile(t.File, "merged tree", ids, layers) }, o)
}

// frozen maps the tree file a cold mount's merged tree was written to, so
// the mount serves it as a warm mount does and the merge's heap can go
// back to the system: the merge builds per-entry structures (over a GB
// for a million-entry image) that the server would otherwise keep for its
// whole life, though all it needs is the flat, file-backed tree. nil (the
// built tree is served) if the file cannot be mapped.
func frozen(mapIt func() (*overlay.Tree, error), o Options) *overlay.Tree {
	t, err := mapIt()
	if err != nil {
		logf(o, "mapping the merged tree: %v", err)
		return nil
	}
	return t
}

// loadWarm assembles a mount from the cache alone — the checkpoint tables
// of every layer and the merged tree of the image — reading no layer bytes
// and no entry tables. It reports false (having changed nothing) when
// anything is missing or does not match, and Load then takes the full path.
func loadWarm(bi *blobs.Image, fmts []*layerindex.Format, o Options, im *Image) bool {
	dir := cache.Dir{Root: o.CacheDir}
	n := len(bi.Layers)
	lo, hi, err := o.View.span(n)
	if err != nil {
		return false
	}
	indexes := make([]*layerindex.Index, n)
	layers := make([]overlay.Layer, n)
	ids := make([]overlay.LayerID, n)
	var closers []io.Closer
	fail := func() bool {
		for _, c := range closers {
			c.Close()
		}
		return false
	}
	for i := lo; i < hi; i++ {
		l, f := &bi.Layers[i], fmts[i]
		key := cacheKey(l, f)
		if key == "" {
			return fail()
		}
		ix, ixFile, err := dir.LoadHeader(key)
		if err != nil {
			return fail()
		}
		closers = append(closers, ixFile) // windows are read from it
		if ix.Compression != f.Compression || ix.CompressedSize != l.Blob.Size() || (l.DiffID != "" && ix.DiffID != l.DiffID) {
			return fail()
		}
		r, ok := servedFrom(ix, l, f, dir, o)
		if !ok {
			return fail()
		}
		if r.closer != nil {
			closers = append(closers, r.closer)
		}
		content := r.content
		if content == nil {
			content = ix.Checkpoints.NewReaderAt(l.Blob, im.Cache, spanKey(ix))
		}
		indexes[i] = ix
		layers[i] = overlay.Layer{Index: ix, Content: content, CheckHeaders: dir.Published(key)}
		if tf := layerindex.TOCFormatOf(f, l.Descriptor.Annotations); tf != nil {
			layers[i].Hide = tf.Hidden()
		}
		ids[i] = overlay.LayerID{Digest: ix.Digest, DiffID: ix.DiffID, UncompressedSize: ix.UncompressedSize}
	}
	tp, err := dir.TreePath(o.View.treeKey(bi.ManifestDigest))
	if err != nil {
		return fail()
	}
	tree, err := overlay.LoadTreeFile(tp, ids[lo:hi], layers[lo:hi])
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			logf(o, "cached tree of %s unusable (%v); rebuilding", bi.ManifestDigest, err)
		}
		return fail()
	}
	cache.Touch(tp) // last use, for prune
	im.Indexes, im.Tree, im.closers = indexes, tree, closers
	im.FromCache = make([]bool, n)
	im.Sources = make([]Source, n)
	for i := lo; i < hi; i++ {
		im.FromCache[i] = true
		im.Sources[i] = SourceCached
		if layers[i].CheckHeaders {
			im.Sources[i] = SourceArtifact
		}
		if o.Progress != nil {
			o.Progress(i, bi.Layers[i].Blob.Size(), bi.Layers[i].Blob.Size())
		}
	}
	return true
}

// layerFormats maps every layer to its format (layerindex.Detect: by
// media type, or by its first bytes when it has none), before anything
// is read: an image with a layer we cannot read fails at once, naming it.
func layerFormats(bi *blobs.Image, lo, hi int) ([]*layerindex.Format, error) {
	fs := make([]*layerindex.Format, len(bi.Layers))
	for i := lo; i < hi; i++ {
		l := &bi.Layers[i]
		f, err := layerindex.Detect(l.Descriptor.MediaType, l.Blob)
		if err != nil {
			return nil, &LayerError{Index: i, Digest: l.Descriptor.Digest, Err: err}
		}
		fs[i] = f
	}
	return fs, nil
}

// cacheKey is the digest a layer's index is cached under: the blob digest,
// or for a legacy docker-archive layer (plain tar, blob digest unknown) its
// DiffID, which for an uncompressed layer is the same thing.
func cacheKey(l *blobs.Layer, f *layerindex.Format) digest.Digest {
	if l.Descriptor.Digest != "" {
		return l.Descriptor.Digest
	}
	if f.Compression == layerindex.None {
		return l.DiffID
	}
	return ""
}

// Optional abilities of a layer blob (a registry blob has both): the
// loader asks for them instead of knowing blob types.
type (
	// streamer reads the whole blob in one streaming request instead of
	// thousands of range reads (keepChunk: keep its chunks in the range
	// cache as they pass).
	streamer interface {
		Stream(ctx context.Context, keepChunk int64) io.ReadCloser
	}
	// chunkChecked blobs check each fetched piece against the index's
	// chunk digests before serving a byte of it.
	chunkChecked interface {
		SetChunkSums(size int64, sums [][32]byte) error
	}
	// unverifiedRanges blobs (a registry's) give their bytes unchecked,
	// for a reader that checks them against digests of its own: a TOC's
	// chunk digests.
	unverifiedRanges interface {
		Unverified() io.ReaderAt
	}
	// tocChunks blobs keep a TOC reader's checked chunks on disk.
	tocChunks interface {
		TOCChunks() (load func(sum [32]byte) ([]byte, bool), store func(sum [32]byte, data []byte))
	}
)

// tocDiskCache is the on-disk cache of a TOC layer's decoded chunks: the
// registry's range cache, if the blob has one.
func tocDiskCache(b blobs.Blob) layerindex.ChunkCache {
	if t, ok := b.(tocChunks); ok {
		load, store := t.TOCChunks()
		return layerindex.ChunkCache{Load: load, Store: store}
	}
	return layerindex.ChunkCache{}
}

// unverifiedBlob is what a TOC reader reads compressed bytes from: the
// blob itself when local (a layout or archive: trusted as such), a
// registry blob's unchecked ranges.
func unverifiedBlob(b blobs.Blob) io.ReaderAt {
	if u, ok := b.(unverifiedRanges); ok {
		return u.Unverified()
	}
	return b
}

// indexed is what indexLayer found for one layer.
type indexed struct {
	ix *layerindex.Index
	// content serves the layer's uncompressed stream when it is not read
	// through ix.Checkpoints (the blob of a plain tar layer, a decoded
	// copy); closer releases it.
	content io.ReaderAt
	closer  io.Closer
	// cached: the index came from the cache or the registry, no pass over
	// the layer was made; published: from the registry, now.
	cached, published bool
}

// indexLayer returns a layer's index — from the cache when a valid one is
// there (reading no layer bytes), else from the layer's own table of
// contents (tf: eStargz, zstd:chunked; footer and TOC only), else from a
// published one, else from one indexing pass over the blob — and how the
// layer is served.
func indexLayer(ctx context.Context, l *blobs.Layer, f *layerindex.Format, tf *layerindex.TOCFormat, o Options, published []byte) (indexed, error) {
	dir := cache.Dir{Root: o.CacheDir}
	key := cacheKey(l, f)
	matches := func(ix *layerindex.Index) bool {
		return ix.Digest == key && ix.Compression == f.Compression && ix.CompressedSize == l.Blob.Size() && (l.DiffID == "" || ix.DiffID == l.DiffID)
	}
	if dir.Enabled() && key != "" && !o.Rebuild {
		ix, err := dir.LoadIndex(key)
		switch {
		case err == nil && matches(ix):
			if r, ok := servedFrom(ix, l, f, dir, o); ok {
				r.cached = true
				progressDone(o, l)
				return r, nil
			}
		case err == nil:
			logf(o, "cached index of %s does not match the layer; rebuilding", key)
		case !errors.Is(err, fs.ErrNotExist):
			logf(o, "cached index of %s unusable (%v); rebuilding", key, err)
		}
	}
	if tf != nil && !o.NoTOC && !o.Rebuild {
		// The TOC, covered by the manifest through its annotation, makes
		// a pass unnecessary; one that cannot be trusted is only logged.
		ix, err := tf.Load(ctx, unverifiedBlob(l.Blob), l.Blob.Size(), l.Descriptor.Digest, l.DiffID, l.Descriptor.Annotations)
		if err == nil {
			progressDone(o, l)
			return indexed{ix: ix}, nil
		}
		if ctx.Err() != nil {
			return indexed{}, ctx.Err()
		}
		logf(o, "layer %d (blob %s): %s unusable (%v); reading the whole layer instead", l.Index, l.Descriptor.Digest, tf.Source, err)
	}
	if published != nil {
		ix, err := layerindex.UnmarshalIndex(published)
		switch {
		case err != nil:
			logf(o, "published index of %s unusable (%v); indexing the layer", key, err)
		case !matches(ix):
			logf(o, "published index of %s describes another layer (%s); indexing the layer", key, ix.Digest)
		default:
			// A publisher's decoded-copy digests describe its own cache
			// file: a layer served from a decoded copy is indexed here.
			ix.Decoded = layerindex.ChunkSums{}
			if r, ok := servedFrom(ix, l, f, dir, o); ok {
				if dir.Enabled() {
					if err := dir.StorePublishedIndex(key, published); err != nil {
						logf(o, "caching index of %s: %v", key, err)
					}
				}
				r.cached, r.published = true, true
				progressDone(o, l)
				return r, nil
			}
			if f.Serving(ix, o.Span) == layerindex.ServeDecodedCopy {
				logf(o, "published index of %s not used: this layer is served from a decoded copy, which takes one pass over it; indexing the layer", key)
			} else {
				logf(o, "published index of %s not used: its chunk table cannot check this layer's bytes; indexing the layer", key)
			}
		}
	}
	return buildIndex(ctx, l, f, o)
}

func progressDone(o Options, l *blobs.Layer) {
	if o.Progress != nil {
		o.Progress(l.Index, l.Blob.Size(), l.Blob.Size())
	}
}

// buildIndex makes the one verifying pass over a layer blob, keeping the
// decoded stream if the format may serve from a decoded copy, and caches
// the index.
func buildIndex(ctx context.Context, l *blobs.Layer, f *layerindex.Format, o Options) (indexed, error) {
	dir := cache.Dir{Root: o.CacheDir}
	bo := layerindex.Options{
		Span:   o.Span,
		Digest: l.Descriptor.Digest,
		Size:   l.Descriptor.Size,
		DiffID: l.DiffID,
	}
	if o.Progress != nil {
		bo.Progress = func(done int64) { o.Progress(l.Index, done, l.Blob.Size()) }
	}
	var tmp *cache.Temp
	if f.KeepsDecodedCopy() {
		// A single-frame zstd layer (the common case) cannot be entered
		// in the middle, so keep the decoded stream; dropped below if the
		// frames turn out small enough to serve as checkpoints. Unnamed
		// where the filesystem allows, so a killed mount leaves nothing.
		tdir := os.TempDir()
		if dir.Enabled() {
			tdir = dir.DecodedDir() // (the digest may be unknown yet: docker-archive)
		}
		if err := os.MkdirAll(tdir, 0o700); err != nil {
			return indexed{}, err
		}
		var err error
		if tmp, err = cache.NewTemp(tdir); err != nil {
			return indexed{}, err
		}
		bo.Tee = tmp
	}
	cleanup := func() { tmp.Discard() }
	var stream io.Reader = io.NewSectionReader(l.Blob, 0, l.Blob.Size())
	if st, ok := l.Blob.(streamer); ok {
		// One streaming GET, not thousands of range reads.
		keep := int64(0)
		if o.Prefetch {
			keep = layerindex.ChunkSize
		}
		rs := st.Stream(ctx, keep)
		defer rs.Close()
		stream = rs
	}
	ix, err := layerindex.Build(ctx, stream, f.Compression, bo)
	if err == nil {
		err = attachSums(ix, l)
	}
	if err != nil {
		cleanup()
		return indexed{}, err
	}
	storeIndex := func(ix *layerindex.Index) {
		if !dir.Enabled() {
			return
		}
		if err := dir.StoreIndex(ix); err != nil {
			logf(o, "caching index of %s: %v", ix.Digest, err)
		} else if o.Rebuild {
			dir.ClearPublished(ix.Digest) // rebuilt from the layer itself: trusted again
		}
	}
	serving := f.Serving(ix, o.Span)
	if serving != layerindex.ServeDecodedCopy {
		cleanup()
		ix.Decoded = layerindex.ChunkSums{} // no copy to check
		storeIndex(ix)
		if serving == layerindex.ServeBlob {
			return indexed{ix: ix, content: l.Blob}, nil
		}
		return indexed{ix: ix}, nil
	}
	// Keep the decoded copy under the blob digest for later mounts; the
	// open handle serves reads even if another mount replaces the file.
	// The index (with the copy's piece digests) is stored only now, so
	// a cached index that asks for a decoded copy has the digests to
	// check it with.
	if dir.Enabled() {
		if err := tmp.Publish(dir.DecodedPath(ix.Digest)); err != nil {
			// Something else is in the copy's place (a directory, say):
			// serve this mount from the temp file, and cache nothing.
			logf(o, "caching the decoded copy of %s: %v; serving it from an unnamed file", ix.Digest, err)
		} else {
			storeIndex(ix)
			dc, err := decodedCopy(tmp.File, ix, dir.DecodedPath(ix.Digest), o)
			if err != nil {
				tmp.Close()
				return indexed{}, err
			}
			return indexed{ix: ix, content: dc, closer: dc}, nil
		}
	}
	// Anonymous (no cache, or it could not be cached): the open handle
	// keeps the data until Close; the name, if it has one, goes now.
	tmp.Unlink()
	dc, err := layerindex.NewDecodedCopy(tmp.File, ix)
	if err != nil {
		cleanup()
		return indexed{}, err
	}
	return indexed{ix: ix, content: dc, closer: dc}, nil
}

// decodedCopy serves a decoded zstd layer from f (which was opened at
// path in the cache), checking each piece before use. A damaged piece
// fails its reads and drops the file from the cache, if it is still the
// same file, so the next mount decodes the layer again.
func decodedCopy(f *os.File, ix *layerindex.Index, path string, o Options) (*layerindex.DecodedCopy, error) {
	dc, err := layerindex.NewDecodedCopy(f, ix)
	if err != nil {
		return nil, err
	}
	dc.OnDamage = func(err error) {
		logf(o, "%v; removing it from the cache (the next mount rebuilds it)", err)
		fi, err1 := f.Stat()
		pi, err2 := os.Lstat(path)
		if err1 == nil && err2 == nil && os.SameFile(fi, pi) {
			os.Remove(path)
		}
	}
	return dc, nil
}

// servedFrom says how a layer with an existing index (cached or
// published) is read; ok is false if something it needs is not there (a
// decoded copy pruned away, chunk digests for a registry layer).
func servedFrom(ix *layerindex.Index, l *blobs.Layer, f *layerindex.Format, dir cache.Dir, o Options) (_ indexed, ok bool) {
	if attachSums(ix, l) != nil {
		return indexed{}, false // an index without chunk digests cannot serve a registry layer
	}
	switch f.Serving(ix, o.Span) {
	case layerindex.ServeBlob:
		return indexed{ix: ix, content: l.Blob}, true
	case layerindex.ServeSpans:
		return indexed{ix: ix}, true
	}
	if !dir.Enabled() {
		return indexed{}, false
	}
	p := dir.DecodedPath(ix.Digest)
	file, err := cache.OpenFile(p)
	if err != nil {
		return indexed{}, false
	}
	// Last use, for prune; before the copy notes the file's ctime, which
	// this moves (a later move means a write: every piece is checked again).
	cache.Touch(p)
	dc, err := decodedCopy(file, ix, p, o)
	if err != nil {
		file.Close()
		return indexed{}, false
	}
	return indexed{ix: ix, content: dc, closer: dc}, true
}

// attachSums gives a registry layer the chunk digests its fetched bytes
// are checked against.
func attachSums(ix *layerindex.Index, l *blobs.Layer) error {
	cc, ok := l.Blob.(chunkChecked)
	if !ok {
		return nil
	}
	return cc.SetChunkSums(ix.Chunks.Size, ix.Chunks.Sums)
}

// fetchPublished gets, for the registry layers whose index is not cached,
// the indexes published next to the image (ocimount index --push). Any
// failure just means indexing those layers here.
func fetchPublished(ctx context.Context, bi *blobs.Image, fmts []*layerindex.Format, lo, hi int, dir cache.Dir, o Options) (map[digest.Digest][]byte, digest.Digest) {
	if bi.Remote == nil || o.Rebuild || o.NoRemoteIndex {
		return nil, ""
	}
	want := map[digest.Digest]int64{}
	for i := lo; i < hi; i++ {
		if !o.NoTOC && layerindex.TOCFormatOf(fmts[i], bi.Layers[i].Descriptor.Annotations) != nil {
			// Its TOC comes first (indexLayer); one that is refused
			// costs a full pass, not a published index fetched for
			// nothing on every mount.
			continue
		}
		key := cacheKey(&bi.Layers[i], fmts[i])
		if !dir.Enabled() || !dir.HasIndex(key) {
			want[key] = bi.Layers[i].Blob.Size()
		}
	}
	if len(want) == 0 {
		return nil, ""
	}
	got, art, err := bi.Remote.FetchIndexes(ctx, want)
	if err != nil {
		logf(o, "looking for published indexes of %s: %v", bi.ManifestDigest, err)
		return nil, ""
	}
	return got, art
}

// spanKey names a layer's spans in the span cache: the blob digest and a
// digest of the checkpoint table. Span i of one blob is another byte range
// under another index (a published index has 2 MiB spans, a local one
// 1 MiB), and a span cache shared by several images may hold both.
func spanKey(ix *layerindex.Index) string {
	h := sha256.New()
	var b [8 * 3]byte
	for _, p := range ix.Checkpoints.Points {
		binary.LittleEndian.PutUint64(b[0:], uint64(p.In))
		binary.LittleEndian.PutUint64(b[8:], uint64(p.Out))
		binary.LittleEndian.PutUint64(b[16:], uint64(p.Bits)|uint64(p.Kind)<<8)
		h.Write(b[:])
	}
	return fmt.Sprintf("%s/%x", ix.Digest, h.Sum(nil)[:12])
}

// tocSpanKey names a TOC layer's decoded chunks in the span cache: the
// blob digest (TOC.Digest is the blob's too). Chunk i of a TOC is not span
// i of a built index of the same blob (NewReaderAt also keeps the two
// kinds apart by a prefix), and NewReaderAt adds a digest of the chunk
// table: one blob digest can carry two tables (a blob that also holds a
// TOC ending where a short descriptor size says it ends).
func tocSpanKey(ix *layerindex.Index) string {
	return fmt.Sprintf("%s/toc/%s", ix.Digest, ix.TOC.Digest)
}

func logf(o Options, format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}
