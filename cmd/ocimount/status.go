package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/loader"
	"github.com/ocimount/ocimount/layerindex"
)

// statusDir holds one unix socket per mount, named after the mountpoint,
// so `ocimount status MNT` finds its server without knowing which cache
// dir or source it was started with.
func statusDir() string {
	if os.Geteuid() == 0 {
		return "/run/ocimount"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "ocimount")
	}
	return filepath.Join(os.TempDir(), "ocimount-"+strconv.Itoa(os.Geteuid()))
}

func statusSocket(mountpoint string) string {
	h := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(statusDir(), hex.EncodeToString(h[:8])+".sock")
}

// Status is what `ocimount status --json` prints (docs/json-schema.md).
type Status struct {
	Mountpoint string        `json:"mountpoint"`
	Source     string        `json:"source"`
	Manifest   string        `json:"manifest"`
	PID        int           `json:"pid"`
	Since      time.Time     `json:"since"`
	Entries    int           `json:"entries"`
	Layers     []LayerStatus `json:"layers"`
}

// LayerStatus is one layer's line. Remote layers carry fetch counters;
// local ones (layouts, archives) are always fully local.
type LayerStatus struct {
	Index      int    `json:"index"`
	Digest     string `json:"digest"`
	Format     string `json:"format"`
	Size       int64  `json:"size"`
	Remote     bool   `json:"remote"`
	FullyLocal bool   `json:"fully_local"`
	*blobs.BlobStats
}

func collectStatus(mnt string, im *loader.Image, since time.Time) Status {
	st := Status{Mountpoint: mnt, Source: im.Image.Source.String(), Manifest: string(im.Image.ManifestDigest),
		PID: os.Getpid(), Since: since, Entries: im.Tree.Len()}
	for _, l := range im.Image.Layers {
		format := "unknown"
		if f, err := layerindex.Detect(l.Descriptor.MediaType, l.Blob); err == nil {
			format = f.Name
			if tf := layerindex.TOCFormatOf(f, l.Descriptor.Annotations); tf != nil {
				format = tf.Name
			}
		}
		ls := LayerStatus{Index: l.Index, Digest: string(l.Descriptor.Digest), Format: format, Size: l.Blob.Size(), FullyLocal: true}
		if rb, ok := l.Blob.(*blobs.RemoteBlob); ok {
			s := rb.Stats()
			ls.Remote, ls.BlobStats = true, &s
			ls.FullyLocal = s.Chunks > 0 && s.Local == s.Chunks
		}
		st.Layers = append(st.Layers, ls)
	}
	return st
}

// serveStatus answers every connection on the mount's status socket with
// the current counters as JSON. The returned func removes the socket.
func serveStatus(o mountOptions, im *loader.Image, since time.Time) (func(), error) {
	p := statusSocket(o.mountpoint)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, err
	}
	os.Remove(p) // a crashed server's leftover; a live one would have the mount
	ln, err := net.Listen("unix", p)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			json.NewEncoder(c).Encode(collectStatus(o.mountpoint, im, since))
			c.Close()
		}
	}()
	return func() { ln.Close(); os.Remove(p) }, nil
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show a mount's layers: bytes fetched and served, cache hits, whether each is fully local",
		ArgsUsage: "MOUNTPOINT",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the status as JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("status needs MOUNTPOINT")
			}
			mnt, err := filepath.Abs(c.Args().Get(0))
			if err != nil {
				return err
			}
			conn, err := net.DialTimeout("unix", statusSocket(mnt), 5*time.Second)
			if err != nil {
				return fmt.Errorf("%s: no ocimount server answers for this mountpoint: %w", mnt, err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			var st Status
			if err := json.NewDecoder(conn).Decode(&st); err != nil {
				return fmt.Errorf("%s: reading status: %w", mnt, err)
			}
			if c.Bool("json") {
				e := json.NewEncoder(os.Stdout)
				e.SetIndent("", "  ")
				return e.Encode(st)
			}
			fmt.Printf("%s: %s (manifest %s), server pid %d, up %v, %d entries\n", st.Mountpoint, st.Source, short(st.Manifest),
				st.PID, time.Since(st.Since).Round(time.Second), st.Entries)
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			// FETCHED: bytes received and verified (a TOC layer's by its
			// chunk digests as they are decoded: BlobStats.Unverified);
			// REJECTED: received and thrown away (wrong digest, cut short,
			// too slow); FAILING: chunks that just failed and fail reads
			// at once for a while.
			fmt.Fprintln(tw, "LAYER\tDIGEST\tFORMAT\tSIZE\tFETCHED\tREJECTED\tSERVED\tREQUESTS\tRETRIES\tHITS\tMISSES\tFAILING\tLOCAL")
			for _, l := range st.Layers {
				if !l.Remote {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t-\t-\t-\t-\t-\t-\t-\t-\tyes (local source)\n", l.Index, short(l.Digest), l.Format, l.Size)
					continue
				}
				s := l.BlobStats
				local := fmt.Sprintf("%d/%d chunks", s.Local, s.Chunks)
				if l.FullyLocal {
					local = "yes"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", l.Index, short(l.Digest), l.Format, l.Size,
					s.Fetched, s.Rejected, s.Served, s.Requests, s.Retries, s.ChunkHits, s.ChunkMisses, s.FailingChunks, local)
			}
			return tw.Flush()
		},
	}
}
