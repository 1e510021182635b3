package main

import (
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"
)

// progressReader counts what is read through it and logs how far along it
// is every interval, so that a long import (a runtime image is over 100 MiB)
// shows it is moving.
type progressReader struct {
	r    io.Reader
	read atomic.Int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read.Add(int64(n))
	return n, err
}

// report logs msg with the bytes read of size every interval until stop is
// called.
func (p *progressReader) report(logger *slog.Logger, msg string, size int64, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := p.read.Load()
				attrs := []any{"read", mebibytes(n)}
				if size > 0 {
					attrs = append(attrs, "of", mebibytes(size), "percent", n*100/size)
				}
				logger.Info(msg, attrs...)
			}
		}
	}()
	return func() { close(done); <-finished }
}

func mebibytes(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
