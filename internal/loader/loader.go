// Package loader wires the one-way data flow blobs → layerindex → overlay:
// it opens an image, indexes all its layers in parallel (one verifying
// streaming pass each) and merges them into a tree ready to be served.
// cmd and the tests use it; fs never sees where bytes come from.
package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Options tune Load. The zero value works: without CacheDir, decoded zstd
// layers go to unlinked files in the system temp dir and die with the mount.
type Options struct {
	// CacheDir holds decoded copies of zstd layers that have no usable
	// frame checkpoints.
	CacheDir string
	// Span is the gzip/zstd checkpoint spacing (0: layerindex default).
	Span int64
	// SpanCacheBytes bounds the decoded-span cache (0: 64 MiB).
	SpanCacheBytes int64
	// Jobs bounds parallel layer indexing (0: number of CPUs).
	Jobs int
	// Progress, if set, is called as layers are indexed.
	Progress func(layer int, done, total int64)
}

// Image is a loaded image: its metadata, its layer indexes and the merged
// tree. Close releases the files behind it.
type Image struct {
	Image   *blobs.Image
	Indexes []*layerindex.Index
	Tree    *overlay.Tree
	Cache   *layerindex.SpanCache
	closers []io.Closer
}

// Close releases blob files and decoded caches.
func (im *Image) Close() error {
	var errs []error
	for _, c := range im.closers {
		errs = append(errs, c.Close())
	}
	if im.Image != nil {
		errs = append(errs, im.Image.Close())
	}
	return errors.Join(errs...)
}

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
	cacheBytes := o.SpanCacheBytes
	if cacheBytes <= 0 {
		cacheBytes = 64 << 20
	}
	im.Cache = layerindex.NewSpanCache(cacheBytes)

	n := len(bi.Layers)
	im.Indexes = make([]*layerindex.Index, n)
	layers := make([]overlay.Layer, n)
	closers := make([]io.Closer, n)
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range bi.Layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				errs[i] = ctx.Err()
				return
			}
			l := &bi.Layers[i]
			ix, content, c, err := indexLayer(ctx, l, o)
			if err != nil {
				errs[i] = &LayerError{Index: i, Digest: l.Descriptor.Digest, Err: err}
				cancel() // one bad layer fails the image: stop the others early
				return
			}
			im.Indexes[i] = ix
			layers[i] = overlay.Layer{Index: ix, Content: content}
			closers[i] = c
			if ix.Checkpoints != nil && content == nil {
				layers[i].Content = ix.Checkpoints.NewReaderAt(l.Blob, im.Cache, string(ix.Digest))
			}
		}()
	}
	wg.Wait()
	for _, c := range closers {
		if c != nil {
			im.closers = append(im.closers, c)
		}
	}
	// Report the first real failure, not the cancellations it caused.
	var first error
	for _, e := range errs {
		if e != nil && !errors.Is(e, context.Canceled) {
			first = e
			break
		}
	}
	if first == nil {
		for _, e := range errs {
			if e != nil {
				first = e
				break
			}
		}
	}
	if first != nil {
		return nil, fmt.Errorf("%s: %w", src, first)
	}
	tree, err := overlay.Merge(layers)
	if err != nil {
		var me *overlay.MergeError
		if errors.As(err, &me) && me.Layer < n {
			err = &LayerError{Index: me.Layer, Digest: bi.Layers[me.Layer].Descriptor.Digest, Err: err}
		}
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	im.Tree = tree
	return im, nil
}

func compressionOf(f blobs.LayerFormat) (layerindex.Compression, error) {
	switch f {
	case blobs.FormatTar:
		return layerindex.None, nil
	case blobs.FormatTarGzip:
		return layerindex.Gzip, nil
	case blobs.FormatTarZstd:
		return layerindex.Zstd, nil
	}
	return 0, fmt.Errorf("unknown layer format %d", f)
}

// indexLayer runs the one indexing pass over a layer. It returns the
// index and, when the layer is served from somewhere other than its
// checkpoints (plain tar, decoded zstd file), that content source.
func indexLayer(ctx context.Context, l *blobs.Layer, o Options) (*layerindex.Index, io.ReaderAt, io.Closer, error) {
	c, err := compressionOf(l.Format)
	if err != nil {
		return nil, nil, nil, err
	}
	bo := layerindex.Options{
		Span:   o.Span,
		Digest: l.Descriptor.Digest,
		Size:   l.Descriptor.Size,
		DiffID: l.DiffID,
	}
	var tmp *os.File
	if c == layerindex.Zstd {
		// Single-frame zstd (the common case) cannot be entered in the
		// middle, so keep the decoded stream; dropped below if the frames
		// turn out small enough to serve as checkpoints.
		dir := os.TempDir()
		if o.CacheDir != "" {
			dir = filepath.Join(o.CacheDir, "decoded")
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, nil, err
		}
		if tmp, err = os.CreateTemp(dir, "layer-*.tmp"); err != nil {
			return nil, nil, nil, err
		}
		bo.Tee = tmp
	}
	cleanup := func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}
	ix, err := layerindex.Build(ctx, io.NewSectionReader(l.Blob, 0, l.Blob.Size()), c, bo)
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	switch c {
	case layerindex.None:
		return ix, l.Blob, nil, nil
	case layerindex.Gzip:
		return ix, nil, nil, nil
	}
	span := o.Span
	if span <= 0 {
		span = layerindex.DefaultSpan
	}
	if ix.Checkpoints.MaxSpanLen() <= 4*span {
		cleanup()
		return ix, nil, nil, nil
	}
	if o.CacheDir == "" {
		// Anonymous: the open handle keeps the data until Close.
		os.Remove(tmp.Name())
		return ix, decodedFile{tmp}, tmp, nil
	}
	// Keep the decoded copy, named by the blob digest so that later
	// mounts (issue: index cache) can find it; the open handle serves
	// reads even if another mount replaces the file meanwhile.
	final := filepath.Join(o.CacheDir, "decoded", ix.Digest.Encoded()+".tar")
	if err := tmp.Sync(); err == nil {
		if err := os.Rename(tmp.Name(), final); err != nil {
			cleanup()
			return nil, nil, nil, err
		}
	}
	return ix, decodedFile{tmp}, tmp, nil
}

// decodedFile is a decoded layer stream in a local file; FUSE splices
// from it (overlay.FileBacked).
type decodedFile struct{ f *os.File }

func (d decodedFile) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }
func (d decodedFile) File() (*os.File, int64)                 { return d.f, 0 }
