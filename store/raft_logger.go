package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newRaftLogger routes hashicorp/raft's hclog output into slog, so that one
// logger configuration covers the whole process.
func newRaftLogger(logger *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Debug,
		Output: io.Discard,
	})
	l.RegisterSink(&slogSink{logger: logger})
	return l
}

type slogSink struct{ logger *slog.Logger }

func (s *slogSink) Accept(name string, level hclog.Level, msg string, args ...interface{}) {
	var lvl slog.Level
	switch level {
	case hclog.Trace, hclog.Debug:
		lvl = slog.LevelDebug
	case hclog.Info:
		lvl = slog.LevelInfo
	case hclog.Warn:
		lvl = slog.LevelWarn
	default:
		lvl = slog.LevelError
	}
	if !s.logger.Enabled(context.Background(), lvl) {
		return
	}
	for i, a := range args {
		// hclog passes printf-style values as hclog.Format.
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				args[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	s.logger.Log(context.Background(), lvl, msg, append([]any{"subsystem", name}, args...)...)
}
