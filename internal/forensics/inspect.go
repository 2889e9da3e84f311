package forensics

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// InspectResult is `ocimount inspect --json` (docs/json-schema.md).
type InspectResult struct {
	Manifest     string            `json:"manifest"` // manifest digest
	Config       string            `json:"config"`   // config digest
	Platform     string            `json:"platform"`
	Created      string            `json:"created,omitempty"`
	Author       string            `json:"author,omitempty"`
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	User         string            `json:"user,omitempty"`
	WorkingDir   string            `json:"workdir,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"`
	Entries      int               `json:"entries"` // paths in the merged tree, the root included
	Layers       []InspectLayer    `json:"layers"`
	// History entries the config has beyond its layers (a malformed
	// config); they are not attributed to any layer.
	UnmatchedHistory int `json:"unmatched_history,omitempty"`
}

// InspectLayer is one layer row.
type InspectLayer struct {
	Index            int    `json:"index"`
	Digest           string `json:"digest"`
	DiffID           string `json:"diff_id"`
	MediaType        string `json:"media_type"`
	Format           string `json:"format"`                 // how the blob is read: tar, tar+gzip, tar+zstd, eStargz, zstd:chunked
	IndexSource      string `json:"index_source,omitempty"` // where its index came from
	CompressedSize   int64  `json:"compressed_size"`
	UncompressedSize int64  `json:"uncompressed_size"`
	Entries          int    `json:"entries"`
	Whiteouts        int    `json:"whiteouts"`
	OpaqueDirs       int    `json:"opaque_dirs"`
	CreatedBy        string `json:"created_by,omitempty"`
	Created          string `json:"created,omitempty"`
	Comment          string `json:"comment,omitempty"`
}

// AlignHistory pairs the config's history with the layers: entries marked
// empty_layer made no layer and are skipped, the others belong to the
// layers in order. The config is untrusted input: a history shorter than
// the layers leaves the last layers without one (nil), a longer one
// reports how many entries were left over.
func AlignHistory(h []ocispec.History, layers int) (perLayer []*ocispec.History, extra int) {
	perLayer = make([]*ocispec.History, layers)
	for _, s := range HistorySteps(h, layers) {
		switch {
		case s.Layer >= 0:
			perLayer[s.Layer] = s.History
		case s.Unmatched:
			extra++
		}
	}
	return perLayer, extra
}

// HistoryStep is one build step in image order: a config history entry,
// the layer it made (-1 for an empty_layer step), or a layer the history
// does not describe (History nil).
type HistoryStep struct {
	History *ocispec.History
	Layer   int
	// Unmatched: a non-empty history entry beyond the image's layers.
	Unmatched bool
}

// HistorySteps lists the config's history with the layers attributed as
// AlignHistory pairs them, empty steps kept in place (explore shows them
// between the layers); layers beyond the history come last.
func HistorySteps(h []ocispec.History, layers int) []HistoryStep {
	var steps []HistoryStep
	next := 0
	for i := range h {
		switch {
		case h[i].EmptyLayer:
			steps = append(steps, HistoryStep{History: &h[i], Layer: -1})
		case next >= layers:
			steps = append(steps, HistoryStep{History: &h[i], Layer: -1, Unmatched: true})
		default:
			steps = append(steps, HistoryStep{History: &h[i], Layer: next})
			next++
		}
	}
	for ; next < layers; next++ {
		steps = append(steps, HistoryStep{Layer: next})
	}
	return steps
}

// Inspect summarizes the manifest, the config and every layer. It needs
// the layers' entry tables (to count whiteouts) but reads no file content.
func Inspect(im *Image) (*InspectResult, error) {
	m := im.Meta
	if m == nil {
		return nil, fmt.Errorf("inspect: no image metadata")
	}
	c := m.Config
	r := &InspectResult{
		Manifest: string(m.ManifestDigest), Config: string(m.ConfigDigest), Author: c.Author,
		Platform:   platformString(m.Platform),
		Entrypoint: c.Config.Entrypoint, Cmd: c.Config.Cmd, Env: c.Config.Env, User: c.Config.User,
		WorkingDir: c.Config.WorkingDir, Labels: c.Config.Labels, Layers: []InspectLayer{},
	}
	if im.Tree != nil {
		r.Entries = im.Tree.Len()
	}
	if c.Created != nil {
		r.Created = c.Created.UTC().Format(time.RFC3339Nano)
	}
	for p := range c.Config.ExposedPorts {
		r.ExposedPorts = append(r.ExposedPorts, p)
	}
	sort.Strings(r.ExposedPorts)
	hist, extra := AlignHistory(c.History, len(im.Layers))
	r.UnmatchedHistory = extra
	for i, l := range im.Layers {
		row := InspectLayer{Index: i, Digest: string(l.Index.Digest), DiffID: string(l.Index.DiffID),
			CompressedSize: l.Index.CompressedSize, UncompressedSize: l.Index.UncompressedSize,
			Entries: len(l.Index.Entries)}
		if i < len(m.Manifest.Layers) {
			row.MediaType = m.Manifest.Layers[i].MediaType // as the manifest says, not normalised
		}
		f, _ := l.Index.Compression.Format()
		if row.MediaType == "" && f != nil {
			// docker-archive: no media types; say what the bytes are.
			row.MediaType = f.MediaType
		}
		if f != nil {
			row.Format = f.Name
		}
		if l.Index.TOC != nil {
			row.Format = l.Index.TOC.Format.Name
		} else if i < len(m.Manifest.Layers) {
			// A TOC layer indexed by a pass (its TOC refused, or
			// `ocimount index`) is still of that format.
			if tf := layerindex.TOCFormatOf(f, m.Manifest.Layers[i].Annotations); tf != nil {
				row.Format = tf.Name
			}
		}
		if i < len(im.Sources) {
			row.IndexSource = im.Sources[i]
		}
		row.Whiteouts, row.OpaqueDirs = countWhiteouts(l)
		if h := hist[i]; h != nil {
			row.CreatedBy, row.Comment = h.CreatedBy, h.Comment
			if h.Created != nil {
				row.Created = h.Created.UTC().Format(time.RFC3339Nano)
			}
		}
		r.Layers = append(r.Layers, row)
	}
	return r, nil
}

// countWhiteouts counts the layer's whiteouts and opaque markers as the
// merge classifies them (overlay.ClassifyName).
func countWhiteouts(l overlay.Layer) (wh, opq int) {
	for i := range l.Index.Entries {
		switch k, _ := overlay.ClassifyName(l.Index.Entries[i].Name); k {
		case overlay.Opaque:
			opq++
		case overlay.Whiteout:
			wh++
		}
	}
	return wh, opq
}

func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// WriteInspect prints an InspectResult as a summary and a layer table,
// or as one JSON object.
func WriteInspect(w io.Writer, r *InspectResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	kv := func(k string, vs ...string) {
		if len(vs) == 0 || len(vs) == 1 && vs[0] == "" {
			return
		}
		for i, v := range vs {
			if i > 0 {
				k = ""
			}
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	quote := func(ss []string) string {
		if ss == nil {
			return ""
		}
		b, _ := json.Marshal(ss)
		return string(b)
	}
	kv("manifest", r.Manifest)
	kv("config", r.Config)
	kv("platform", r.Platform)
	kv("created", r.Created)
	kv("author", r.Author)
	kv("entrypoint", quote(r.Entrypoint))
	kv("cmd", quote(r.Cmd))
	kv("user", r.User)
	kv("workdir", r.WorkingDir)
	kv("env", r.Env...)
	var labels []string
	for k, v := range r.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	kv("labels", labels...)
	kv("exposed ports", strings.Join(r.ExposedPorts, " "))
	var comp, unc int64
	for _, l := range r.Layers {
		comp += l.CompressedSize
		unc += l.UncompressedSize
	}
	kv("layers", fmt.Sprintf("%d (%d bytes compressed, %d uncompressed)", len(r.Layers), comp, unc))
	kv("entries", fmt.Sprintf("%d in the merged tree", r.Entries))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tDIGEST\tMEDIA TYPE\tFORMAT\tINDEX\tCOMPRESSED\tUNCOMPRESSED\tENTRIES\tWHITEOUTS\tOPAQUE\tCREATED BY")
	for _, l := range r.Layers {
		src := l.IndexSource
		if src == "" {
			src = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", l.Index, shortDigest(l.Digest), shortMediaType(l.MediaType),
			l.Format, src, l.CompressedSize, l.UncompressedSize, l.Entries, l.Whiteouts, l.OpaqueDirs, oneLine(l.CreatedBy, 60))
	}
	if r.UnmatchedHistory > 0 {
		fmt.Fprintf(tw, "(%d history entries match no layer)\n", r.UnmatchedHistory)
	}
	return tw.Flush()
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// shortMediaType drops the common prefixes, which say nothing in a table.
func shortMediaType(mt string) string {
	for _, p := range []string{"application/vnd.oci.image.layer.v1.", "application/vnd.docker.image.rootfs."} {
		if strings.HasPrefix(mt, p) {
			return mt[len(p):]
		}
	}
	return mt
}

// oneLine keeps a table row on one line: control characters become
// spaces and long text is cut.
func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}
