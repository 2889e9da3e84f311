package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// readyFDEnv tells the background child which inherited fd to report on.
const readyFDEnv = "OCIMOUNT_READY_FD"

// daemonize re-executes ocimount as a background server in its own session
// and waits until it says "ok" (the mount is serving) or reports an error,
// so that `ocimount mount` returns only once the mount is usable and fails
// with the server's message otherwise. Re-exec rather than fork: the Go
// runtime cannot fork safely.
func daemonize(o mountOptions) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		pw.Close()
		return err
	}
	defer devnull.Close()
	// The server's stderr goes to its log file, so that even a crash
	// (a Go panic trace) is on record; stdin/stdout are /dev/null so it
	// holds none of the caller's pipes.
	stderr := devnull
	if err := os.MkdirAll(filepath.Dir(o.logFile), 0o700); err == nil {
		if lf, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
			defer lf.Close()
			stderr = lf
		}
	}
	args, creds := stripCreds(os.Args[1:])
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	if creds != "" {
		// Through the environment, not argv: a long-running server's
		// command line is readable by every user in /proc.
		cmd.Env = append(cmd.Env, "OCIMOUNT_CREDS="+creds)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, stderr
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return err
	}
	pw.Close()
	var pg *progress
	if !o.quiet && isTerminal(os.Stderr) {
		pg = newProgress(os.Stderr, 0)
	}
	br := bufio.NewReader(pr)
	var msg string
	var rerr error
	for {
		msg, rerr = br.ReadString('\n')
		msg = strings.TrimSpace(msg)
		var i int
		var done, total int64
		if n, _ := fmt.Sscanf(msg, "progress %d %d %d", &i, &done, &total); n == 3 {
			if pg != nil {
				pg.update(i, done, total)
			}
			continue
		}
		break
	}
	if pg != nil {
		pg.finish()
	}
	switch {
	case msg == "ok":
		cmd.Process.Release()
		return nil
	case strings.HasPrefix(msg, "error: "):
		cmd.Wait()
		return errors.New(strings.TrimPrefix(msg, "error: "))
	}
	werr := cmd.Wait()
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return fmt.Errorf("server exited before the mount was ready (%v); see %s", werr, o.logFile)
}

// readyPipe returns the pipe to the waiting parent, or nil in the
// foreground.
func readyPipe() *os.File {
	if os.Getenv(readyFDEnv) != "3" {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	return os.NewFile(3, "ready")
}

// stripCreds removes --creds from args and returns its value.
func stripCreds(args []string) (out []string, creds string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...), creds
		}
		switch {
		case a == "--creds" || a == "-creds":
			if i+1 < len(args) {
				creds = args[i+1]
				i++
			}
			continue
		case strings.HasPrefix(a, "--creds=") || strings.HasPrefix(a, "-creds="):
			_, creds, _ = strings.Cut(a, "=")
			continue
		}
		out = append(out, a)
	}
	return out, creds
}
