// Command randread measures random-read latency on one file: n preads of bs
// bytes at uniformly random bs-aligned offsets (fixed seed, so every target
// gets the same offsets), with POSIX_FADV_RANDOM set so the kernel does not
// read ahead. It prints one line of key=value pairs (latencies in µs):
//
//	reads=2000 bs=4096 p50_us=… p90_us=… p99_us=… max_us=… mean_us=… total_s=…
//
// Used by scripts/bench.sh; -timeout bounds slow targets (archivemount),
// reporting how many reads finished.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	n := flag.Int("n", 2000, "number of reads")
	bs := flag.Int("bs", 4096, "bytes per read")
	seed := flag.Uint64("seed", 1, "random seed")
	timeout := flag.Duration("timeout", 0, "stop after this long (0: never)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: randread [-n N] [-bs B] [-seed S] [-timeout D] FILE\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *n <= 0 || *bs <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "randread:", err)
		os.Exit(1)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fmt.Fprintln(os.Stderr, "randread:", err)
		os.Exit(1)
	}
	blocks := st.Size() / int64(*bs)
	if blocks < 1 {
		fmt.Fprintln(os.Stderr, "randread: file smaller than one block")
		os.Exit(1)
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)

	rng := rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))
	buf := make([]byte, *bs)
	lat := make([]time.Duration, 0, *n)
	start := time.Now()
	for i := 0; i < *n; i++ {
		if i > 0 && *timeout > 0 && time.Since(start) > *timeout {
			break
		}
		off := rng.Int64N(blocks) * int64(*bs)
		t0 := time.Now()
		m, err := f.ReadAt(buf, off)
		d := time.Since(t0)
		if err != nil || m != len(buf) {
			fmt.Fprintf(os.Stderr, "randread: read %d at %d: %d bytes, %v\n", len(buf), off, m, err)
			os.Exit(1)
		}
		lat = append(lat, d)
	}
	total := time.Since(start)
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	q := func(p float64) float64 {
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Nanoseconds()) / 1e3
	}
	fmt.Printf("reads=%d bs=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f total_s=%.3f\n",
		len(lat), *bs, q(0.50), q(0.90), q(0.99), q(1), float64(sum.Nanoseconds())/1e3/float64(len(lat)), total.Seconds())
}
