// Command countproxy is a reverse proxy that counts what passes through
// it: requests and response body bytes (in total and for blob GETs).
// scripts/bench-registry.sh puts it between ocimount (or skopeo) and a
// registry to measure how many bytes a workload fetches.
//
//	countproxy -listen 127.0.0.1:0 -upstream http://127.0.0.1:5000 -addr-file F
//
// It writes its address to -addr-file once listening. Totals are printed
// to stderr on SIGUSR1, and served as JSON by GET /_countproxy/stats on
// the proxy itself (POST /_countproxy/reset zeroes them). These paths are
// never forwarded.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
)

type counters struct {
	Requests     int64 `json:"requests"`
	Bytes        int64 `json:"bytes"`
	BlobRequests int64 `json:"blob_requests"`
	RangeGets    int64 `json:"range_requests"`
	BlobBytes    int64 `json:"blob_bytes"`
}

var requests, bytes, blobRequests, rangeGets, blobBytes atomic.Int64

func snapshot() counters {
	return counters{requests.Load(), bytes.Load(), blobRequests.Load(), rangeGets.Load(), blobBytes.Load()}
}

func reset() {
	for _, c := range []*atomic.Int64{&requests, &bytes, &blobRequests, &rangeGets, &blobBytes} {
		c.Store(0)
	}
}

// countingWriter counts the body bytes written to the client.
type countingWriter struct {
	http.ResponseWriter
	blob bool
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	bytes.Add(int64(n))
	if w.blob {
		blobBytes.Add(int64(n))
	}
	return n, err
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := flag.String("upstream", "", "registry base URL, e.g. http://127.0.0.1:5000")
	addrFile := flag.String("addr-file", "", "write the listening address here")
	flag.Parse()
	if *upstream == "" {
		log.Fatal("countproxy: -upstream is required")
	}
	up := strings.TrimRight(*upstream, "/")
	client := &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_countproxy/stats", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(snapshot())
	})
	mux.HandleFunc("/_countproxy/reset", func(w http.ResponseWriter, r *http.Request) {
		reset()
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		blob := strings.Contains(r.URL.Path, "/blobs/sha") && r.Method == http.MethodGet
		if blob {
			blobRequests.Add(1)
			if r.Header.Get("Range") != "" {
				rangeGets.Add(1)
			}
		}
		out, err := http.NewRequestWithContext(r.Context(), r.Method, up+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = r.Header.Clone()
		out.ContentLength = r.ContentLength
		resp, err := client.Do(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			if k == "Location" {
				// Keep the client on the proxy for relative and upstream URLs.
				for i := range v {
					v[i] = strings.Replace(v[i], up, "http://"+r.Host, 1)
				}
			}
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(countingWriter{w, blob}, resp.Body)
	})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile+".tmp", []byte(l.Addr().String()+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(*addrFile+".tmp", *addrFile); err != nil {
			log.Fatal(err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for range sig {
			c := snapshot()
			fmt.Fprintf(os.Stderr, "requests=%d bytes=%d blob_requests=%d range_requests=%d blob_bytes=%d\n",
				c.Requests, c.Bytes, c.BlobRequests, c.RangeGets, c.BlobBytes)
		}
	}()
	log.Fatal(http.Serve(l, mux))
}
